"""Decoders: networks from a latent code z to the parameters of p(x|z).

A decoder maps ``(..., latent_dim)`` to ``(..., *param_shape)``, where the likelihood says
what ``param_shape`` is for an image shape (one logit per pixel for a Bernoulli).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pyro_vae.nn import mlp


class MLPDecoder(nn.Module):
    """Fully connected decoder: z -> hidden layers -> flat parameters -> ``param_shape``."""

    def __init__(
        self,
        latent_dim: int,
        param_shape: Sequence[int],
        hidden_dims: Sequence[int],
        activation: str = "softplus",
    ):
        super().__init__()
        self.param_shape = tuple(param_shape)
        # Hidden layers are listed encoder-side first; the decoder mirrors them.
        sizes = [latent_dim, *reversed(hidden_dims), math.prod(self.param_shape)]
        self.net = mlp(sizes, activation, activate_last=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.param_shape)
