"""The mean-field Gaussian guide.

    q_φ(z | x) = N(z; μ_φ(x), diag σ_φ(x)²)

Amortized: one encoder maps each image to (μ, σ), as in Kingma & Welling (2014),
"Auto-Encoding Variational Bayes". σ is softplus(a) + 1e-6 of the encoder's raw output a, or
with ``scale_link="bounded-logvar"`` exp(½ hardtanh(a, −6, 2)), log σ² bounded as in the
VampPrior authors' code (:func:`pyro_vae.nn.bounded_log_variance_scale`).
TraceMeanField_ELBO uses the analytic KL to a Normal prior.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro_vae.guides.base import AmortizedGuide
from torch import nn

from pyro_vae.nn import SCALE_LINKS


class DiagNormalGuide(AmortizedGuide):
    """Amortized diagonal-Normal guide; call it as a Pyro guide: ``guide(x)``."""

    def __init__(self, encoder: nn.Module, latent_dim: int, scale_link: str = "softplus"):
        super().__init__(encoder, latent_dim)
        self.scale_link = SCALE_LINKS[scale_link]
        self.loc = nn.Linear(encoder.out_features, latent_dim)
        self.scale = nn.Linear(encoder.out_features, latent_dim)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        hidden = self.encoder(x)
        scale = self.scale_link(self.scale(hidden))
        return dist.Normal(self.loc(hidden), scale, validate_args=False).to_event(1)
