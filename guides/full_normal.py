"""Gaussian guide with a full covariance, through a learned Cholesky factor.

    q_φ(z | x) = N(z; μ_φ(x), L_φ(x) L_φ(x)ᵀ),   L lower triangular, diag(L) > 0

The richest Gaussian family: it can represent the exact posterior of a linear-Gaussian
model. The network emits latent_dim (latent_dim + 1) / 2 entries of L per image.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro_vae.guides.base import AmortizedGuide
from torch import nn

from pyro_vae.nn import positive


class FullNormalGuide(AmortizedGuide):
    def __init__(self, encoder: nn.Module, latent_dim: int):
        super().__init__(encoder, latent_dim)
        self.loc = nn.Linear(encoder.out_features, latent_dim)
        self.tril = nn.Linear(encoder.out_features, latent_dim * (latent_dim + 1) // 2)
        rows, cols = torch.tril_indices(latent_dim, latent_dim)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def scale_tril(self, hidden: torch.Tensor) -> torch.Tensor:
        entries = self.tril(hidden)
        tril = entries.new_zeros(*entries.shape[:-1], self.latent_dim, self.latent_dim)
        tril[..., self.rows, self.cols] = entries
        diagonal = positive(tril.diagonal(dim1=-2, dim2=-1))
        return tril.tril(-1) + torch.diag_embed(diagonal)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        hidden = self.encoder(x)
        return dist.MultivariateNormal(
            self.loc(hidden), scale_tril=self.scale_tril(hidden), validate_args=False
        )
