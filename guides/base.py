"""What every amortized guide shares: the Pyro guide statement around ``posterior(x)``.

A family subclasses :class:`AmortizedGuide` and gives ``posterior(x)``, the distribution
q_φ(z|x) for a batch of images: batch shape ``(N,)``, event shape ``(latent_dim,)``,
reparameterized (``has_rsample``) so Trace_ELBO and the IWAE objective take pathwise
gradients.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class AmortizedGuide(nn.Module):
    """q_φ(z|x) for each image of a batch, as a Pyro guide: ``guide(x)``.

    Sites: ``z`` inside ``pyro.plate("data", N, dim=-1)``, the model's latent site.
    ``pyro.module("guide", self)`` registers every parameter (encoder and heads) with Pyro.
    """

    def __init__(self, encoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder = encoder
        self.latent_dim = latent_dim

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        pyro.module("guide", self)
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", self.posterior(x))

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """One representative latent code per image (reconstructions, traversals, the
        hierarchical guide's top layer): q's mean. Differentiable; wrap in no_grad to view."""
        return self.posterior(x).mean
