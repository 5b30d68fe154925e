"""Priors p(z) over the latent code.

A prior is an ``nn.Module`` whose ``forward(batch_shape)`` returns a Pyro distribution with
that batch shape and event shape ``(latent_dim,)``. Learnable priors keep their parameters
on the module, which the model registers with ``pyro.module``.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn


class StandardNormalPrior(nn.Module):
    """p(z) = N(z; 0, I), as in Kingma & Welling (2014), "Auto-Encoding Variational Bayes"."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        # Buffers, not constants, so that .to(device) moves them with the model.
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self, batch_shape: torch.Size | tuple[int, ...]) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).expand((*batch_shape, self.latent_dim)).to_event(1)
