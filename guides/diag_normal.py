"""The mean-field Gaussian guide.

    q_φ(z | x) = N(z; μ_φ(x), diag σ_φ(x)²),   σ_φ(x) = softplus(·) + 1e-6

Amortized: one encoder maps each image to (μ, σ), as in Kingma & Welling (2014),
"Auto-Encoding Variational Bayes". Samples are reparameterized, so Trace_ELBO uses
pathwise gradients, and TraceMeanField_ELBO can use the analytic KL to a Normal prior.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

# Keeps σ away from zero, where log q(z|x) and its gradient blow up.
MIN_SCALE = 1e-6


class DiagNormalGuide(nn.Module):
    """Amortized diagonal-Normal guide; call it as a Pyro guide: ``guide(x)``."""

    def __init__(self, encoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder = encoder
        self.latent_dim = latent_dim
        self.loc = nn.Linear(encoder.out_features, latent_dim)
        self.scale = nn.Linear(encoder.out_features, latent_dim)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) for images ``(N, C, H, W)``: batch shape (N,), event shape (latent_dim,)."""
        hidden = self.encoder(x)
        scale = F.softplus(self.scale(hidden)) + MIN_SCALE
        return dist.Normal(self.loc(hidden), scale, validate_args=False).to_event(1)

    def forward(self, x: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        pyro.module("guide", self)
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", self.posterior(x))
