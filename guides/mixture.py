"""Mixture of diagonal Gaussians with reparameterized sampling.

    q_φ(z | x) = Σ_c π_c(x) N(z; μ_c(x), diag σ_c(x)²)

Sampling a mixture picks a component, which has no pathwise gradient; Pyro's
``MixtureOfDiagNormals`` supplies implicit reparameterization gradients for it (Jankowiak
& Obermeyer 2018, "Pathwise Derivatives Beyond the Reparameterization Trick"), so the
family trains with Trace_ELBO like any other.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro_vae.guides.base import AmortizedGuide
from torch import nn

from pyro_vae.nn import positive


class MixtureGuide(AmortizedGuide):
    def __init__(self, encoder: nn.Module, latent_dim: int, components: int):
        super().__init__(encoder, latent_dim)
        self.components = components
        self.locs = nn.Linear(encoder.out_features, components * latent_dim)
        self.scales = nn.Linear(encoder.out_features, components * latent_dim)
        self.logits = nn.Linear(encoder.out_features, components)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        hidden = self.encoder(x)
        shape = (self.components, self.latent_dim)
        locs = self.locs(hidden).unflatten(-1, shape)
        scales = positive(self.scales(hidden)).unflatten(-1, shape)
        return dist.MixtureOfDiagNormals(locs, scales, self.logits(hidden))

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The mixture's mean, Σ_c π_c μ_c."""
        hidden = self.encoder(x)
        locs = self.locs(hidden).unflatten(-1, (self.components, self.latent_dim))
        weights = torch.softmax(self.logits(hidden), -1)
        return (weights.unsqueeze(-1) * locs).sum(-2)
