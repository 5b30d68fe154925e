"""Heavy-tailed diagonal guide.

    q_φ(z | x) = Π_d StudentT(z_d; ν_d, μ_φ(x)_d, σ_φ(x)_d),   ν = 1 + softplus(·) > 1

Heavier tails than the prior give importance weights with a lighter tail, so the
log-likelihood estimate is more reliable (smaller PSIS k̂) for the same number of samples.
The degrees of freedom ν are global learned parameters, one per latent dimension.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro_vae.guides.base import AmortizedGuide
from torch import nn

from pyro_vae.nn import positive


class StudentTGuide(AmortizedGuide):
    def __init__(self, encoder: nn.Module, latent_dim: int, initial_df: float = 5.0):
        super().__init__(encoder, latent_dim)
        self.loc = nn.Linear(encoder.out_features, latent_dim)
        self.scale = nn.Linear(encoder.out_features, latent_dim)
        # softplus⁻¹(initial_df - 1), so that ν starts at initial_df
        raw = torch.log(torch.expm1(torch.tensor(initial_df - 1.0)))
        self.raw_df = nn.Parameter(raw.repeat(latent_dim))

    @property
    def df(self) -> torch.Tensor:
        return 1.0 + nn.functional.softplus(self.raw_df)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        hidden = self.encoder(x)
        loc = self.loc(hidden)
        scale = positive(self.scale(hidden))
        return dist.StudentT(self.df, loc, scale, validate_args=False).to_event(1)
