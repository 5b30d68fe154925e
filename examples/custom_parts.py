"""A custom prior and a custom guide, registered by name: train them from the command line.

    pyro-vae train --import custom_parts --prior laplace --guide iso-normal --epochs 5

(with this folder on PYTHONPATH, or the module installed). The run records the module, so
``pyro-vae evaluate RUN`` imports it again. What each kind must provide is written in
``pyro_vae.protocols``; ``register`` checks it.

    p(z) = Π_d Laplace(z_d; 0, 1)                 (LaplacePrior)
    q(z|x) = N(μ_φ(x), σ_φ(x)² I), one σ per image  (IsotropicNormalGuide)
"""

import pyro.distributions as dist
import torch
from pyro_vae.guides import AmortizedGuide
from torch import nn

from pyro_vae import register


class LaplacePrior(nn.Module):
    """A heavier-tailed prior than N(0, I); a Prior (pyro_vae.protocols.Prior)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self, batch_shape) -> dist.TorchDistribution:
        return dist.Laplace(self.loc, 1.0).to_event(1).expand(batch_shape)


class IsotropicNormalGuide(AmortizedGuide):
    """q(z|x) with one scale per image: the encoder's features to μ (latent_dim) and log σ."""

    def __init__(self, encoder: nn.Module, latent_dim: int):
        super().__init__(encoder, latent_dim)
        self.loc = nn.Linear(encoder.out_features, latent_dim)
        self.log_scale = nn.Linear(encoder.out_features, 1)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        hidden = self.encoder(x)
        loc = self.loc(hidden)
        scale = self.log_scale(hidden).exp().expand_as(loc)
        return dist.Normal(loc, scale).to_event(1)


register("prior", "laplace", lambda config, dim, posterior, shape: LaplacePrior(dim))
register("guide", "iso-normal", lambda config, encoder, dim: IsotropicNormalGuide(encoder, dim))
