"""Encoders: networks from images to a feature vector that a guide turns into q(z|x).

An encoder maps ``(..., C, H, W)`` to ``(..., out_features)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pyro_vae.nn import mlp


class MLPEncoder(nn.Module):
    """Fully connected encoder: flattened image -> hidden layers (activated) -> features."""

    def __init__(
        self, image_shape: Sequence[int], hidden_dims: Sequence[int], activation: str = "softplus"
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.out_features = hidden_dims[-1]
        self.net = mlp([math.prod(self.image_shape), *hidden_dims], activation, activate_last=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-len(self.image_shape)))
