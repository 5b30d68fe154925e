"""The guide of the two-level hierarchical VAE: x -> z1 -> z2 (Burda et al. 2016).

    q(z1, z2 | x) = q_φ(z1 | x) q_ψ(z2 | z1)

Each layer is an amortized family of the registry (flows included): the bottom one reads
the image through the image encoder, the top one reads z1 through an MLP. Sites ``z1`` and
``z2`` match the model's.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro_vae.guides.base import AmortizedGuide
from torch import nn


class HierarchicalGuide(nn.Module):
    def __init__(self, bottom: AmortizedGuide, top: AmortizedGuide):
        super().__init__()
        self.bottom = bottom
        self.top = top
        self.latent_dim = top.latent_dim

    def forward(self, x: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        pyro.module("guide", self)
        with pyro.plate("data", x.shape[0], dim=-1):
            z1 = pyro.sample("z1", self.bottom.posterior(x))
            return pyro.sample("z2", self.top.posterior(z1))

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z2 | z1 = code of q(z1 | x)): the top layer seen from an image, for the
        latent-space tools and a VampPrior on the top layer."""
        return self.top.posterior(self.bottom.code(x))

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return self.top.code(self.bottom.code(x))

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z1, z2): each layer's representative code, bottom first as the guide draws."""
        z1 = self.bottom.code(x)
        return z1, self.top.code(z1)

    @property
    def flows(self):
        return getattr(self.top, "flows", None)
