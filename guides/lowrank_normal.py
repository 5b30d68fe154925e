"""Gaussian guide with a low-rank plus diagonal covariance.

    q_φ(z | x) = N(z; μ_φ(x), F_φ(x) F_φ(x)ᵀ + diag d_φ(x)),   F: latent_dim x rank

Captures the ``rank`` strongest posterior correlations at O(latent_dim · rank) cost
(Rezende et al. 2014, "Stochastic Backpropagation", section 4.3).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro_vae.guides.base import AmortizedGuide
from torch import nn

from pyro_vae.nn import positive


class LowRankNormalGuide(AmortizedGuide):
    def __init__(self, encoder: nn.Module, latent_dim: int, rank: int):
        super().__init__(encoder, latent_dim)
        self.rank = rank
        self.loc = nn.Linear(encoder.out_features, latent_dim)
        self.factor = nn.Linear(encoder.out_features, latent_dim * rank)
        self.diag = nn.Linear(encoder.out_features, latent_dim)
        # Start near a diagonal guide: small factors, so early training is not dominated by them.
        nn.init.normal_(self.factor.weight, std=1e-3)
        nn.init.zeros_(self.factor.bias)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        hidden = self.encoder(x)
        factor = self.factor(hidden).unflatten(-1, (self.latent_dim, self.rank))
        return dist.LowRankMultivariateNormal(
            self.loc(hidden), factor, positive(self.diag(hidden)) ** 2, validate_args=False
        )
