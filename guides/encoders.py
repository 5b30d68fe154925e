"""Encoders: networks from images to a feature vector that a guide turns into q(z|x).

An encoder maps ``(..., C, H, W)`` to ``(..., out_features)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pyro_vae.nn import ResidualBlock, activation, flat_batch, halvings, mlp


class MLPEncoder(nn.Module):
    """Fully connected encoder: flattened image -> hidden layers (activated) -> features.
    ``gated``: gated dense layers (``pyro_vae.nn.GatedDense``) instead of activations."""

    def __init__(
        self,
        image_shape: Sequence[int],
        hidden_dims: Sequence[int],
        activation: str = "softplus",
        gated: bool = False,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.out_features = hidden_dims[-1]
        sizes = [math.prod(self.image_shape), *hidden_dims]
        self.net = mlp(sizes, activation, activate_last=True, gated=gated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-len(self.image_shape)))


class ConvEncoder(nn.Module):
    """Convolutional encoder: per stage a stride-2 convolution and a residual block, then a
    linear layer to ``out_features``. For 28x28x1, 32x32x3 or any (C, H, W) image."""

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: Sequence[int],
        out_features: int,
        activation_name: str = "softplus",
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.out_features = out_features
        layers: list[nn.Module] = []
        previous = self.image_shape[0]
        for c in channels:
            layers += [
                nn.Conv2d(previous, c, 3, stride=2, padding=1),
                ResidualBlock(c, activation_name),
            ]
            previous = c
        self.convs = nn.Sequential(*layers)
        h, w = halvings(self.image_shape[1:], len(channels))[-1]
        self.head = nn.Sequential(
            activation(activation_name),
            nn.Flatten(),
            nn.Linear(previous * h * w, out_features),
            activation(activation_name),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images, batch = flat_batch(x, 3)
        return self.head(self.convs(images)).reshape(*batch, self.out_features)
