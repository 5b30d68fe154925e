"""The mean-field Gaussian guide.

    q_φ(z | x) = N(z; μ_φ(x), diag σ_φ(x)²)

Amortized: one encoder maps each image to (μ, σ), as in Kingma & Welling (2014),
"Auto-Encoding Variational Bayes". TraceMeanField_ELBO uses the analytic KL to a Normal prior.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from guides.base import AmortizedGuide
from pyro_vae.nn import positive


class DiagNormalGuide(AmortizedGuide):
    """Amortized diagonal-Normal guide; call it as a Pyro guide: ``guide(x)``."""

    def __init__(self, encoder: nn.Module, latent_dim: int):
        super().__init__(encoder, latent_dim)
        self.loc = nn.Linear(encoder.out_features, latent_dim)
        self.scale = nn.Linear(encoder.out_features, latent_dim)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        hidden = self.encoder(x)
        scale = positive(self.scale(hidden))
        return dist.Normal(self.loc(hidden), scale, validate_args=False).to_event(1)
