"""Decoders: networks from a latent code z to the parameters of p(x|z).

A decoder maps ``(..., latent_dim)`` to ``(..., *param_shape)``, where the likelihood says
what ``param_shape`` is for an image shape (one logit per pixel for a Bernoulli).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pyro_vae.nn import ResidualBlock, activation, flat_batch, halvings, mlp


class MLPDecoder(nn.Module):
    """Fully connected decoder: z -> hidden layers -> flat parameters -> ``param_shape``.
    ``gated``: gated dense hidden layers (``pyro_vae.nn.GatedDense``), a linear head."""

    def __init__(
        self,
        latent_dim: int,
        param_shape: Sequence[int],
        hidden_dims: Sequence[int],
        activation: str = "softplus",
        gated: bool = False,
    ):
        super().__init__()
        self.param_shape = tuple(param_shape)
        # Hidden layers are listed encoder-side first; the decoder mirrors them.
        sizes = [latent_dim, *reversed(hidden_dims), math.prod(self.param_shape)]
        self.net = mlp(sizes, activation, activate_last=False, gated=gated)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.param_shape)

    def start_output_at(self, bias: torch.Tensor) -> None:
        """Set the output layer's bias to ``bias`` (``param_shape``): what the decoder
        outputs, before training, where its last hidden layer is zero."""
        with torch.no_grad():
            self.net[-1].bias.copy_(bias.reshape(-1))


class ConvDecoder(nn.Module):
    """Convolutional decoder mirroring :class:`pyro_vae.guides.encoders.ConvEncoder`: z -> linear ->
    the smallest feature map, then per stage a residual block, a resize to the encoder's
    size at that stage and a convolution, and a final convolution to the parameters."""

    def __init__(
        self,
        latent_dim: int,
        param_shape: Sequence[int],
        channels: Sequence[int],
        hidden: int,
        activation_name: str = "softplus",
    ):
        super().__init__()
        self.param_shape = tuple(param_shape)
        self.sizes = halvings(self.param_shape[1:], len(channels))
        self.channels = list(channels)
        h, w = self.sizes[-1]
        self.stem = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            activation(activation_name),
            nn.Linear(hidden, self.channels[-1] * h * w),
        )
        self.blocks = nn.ModuleList(ResidualBlock(c, activation_name) for c in reversed(channels))
        outs = [*reversed(self.channels[:-1]), self.channels[0]]
        self.convs = nn.ModuleList(
            nn.Conv2d(c, out, 3, padding=1) for c, out in zip(reversed(channels), outs)
        )
        self.out = nn.Sequential(
            activation(activation_name),
            nn.Conv2d(self.channels[0], self.param_shape[0], 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        codes, batch = flat_batch(z, 1)
        h, w = self.sizes[-1]
        x = self.stem(codes).reshape(-1, self.channels[-1], h, w)
        for block, conv, size in zip(self.blocks, self.convs, reversed(self.sizes[:-1])):
            x = conv(nn.functional.interpolate(block(x), size=size, mode="nearest"))
        return self.out(x).reshape(*batch, *self.param_shape)
