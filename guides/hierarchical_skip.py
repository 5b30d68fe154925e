"""The guide of the VampPrior paper's two-level VAE (``pyro_vae.models.hvae_skip``).

It infers the top layer first:

    q(z2, z1 | x) = q_φ(z2 | x) q_ψ(z1 | x, z2)

Tomczak & Welling (2018, "VAE with a VampPrior", section 3.2). Each layer is an amortized
family of the registry: the top one reads the image through the image encoder, the bottom
one reads the image and z2 through a :class:`ImageAndCodeEncoder`. The VampPrior's
components are the top layer's q(z2 | u_k), as in the paper. Sites ``z2`` and ``z1`` match
the model's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro_vae.guides.base import AmortizedGuide
from pyro_vae.models.hvae_skip import joined
from torch import nn

from pyro_vae.nn import mlp


class ImageAndCodeEncoder(nn.Module):
    """Features of an image x and a top-layer code z2, for q(z1 | x, z2): x and z2 each
    through one activated layer of width ``hidden_dims[0]``, joined, then
    ``2·hidden_dims[0] -> hidden_dims[1:]`` (or ``-> hidden_dims[0]`` where that is the only
    width), each layer activated. Called on the pair ``(x, z2)``; z2 may carry particle
    dimensions to the left of the images'."""

    def __init__(
        self,
        image_shape: Sequence[int],
        code_dim: int,
        hidden_dims: Sequence[int],
        activation: str,
        gated: bool,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        width = hidden_dims[0]
        joint = list(hidden_dims[1:]) or [width]
        self.out_features = joint[-1]
        self.image_in = mlp([math.prod(self.image_shape), width], activation, True, gated)
        self.code_in = mlp([code_dim, width], activation, True, gated)
        self.net = mlp([2 * width, *joint], activation, True, gated)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, z2 = inputs
        image = self.image_in(x.flatten(-len(self.image_shape)))
        return self.net(joined(image, self.code_in(z2)))


class SkipHierarchicalGuide(nn.Module):
    """q(z2|x) q(z1|x,z2) as a Pyro guide: ``guide(x)``. ``top``: a registry family on the
    image encoder; ``bottom``: a registry family on an :class:`ImageAndCodeEncoder`."""

    def __init__(self, top: AmortizedGuide, bottom: AmortizedGuide):
        super().__init__()
        self.top = top
        self.bottom = bottom
        self.latent_dim = top.latent_dim

    def forward(self, x: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        pyro.module("guide", self)
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", self.top.posterior(x))
            return pyro.sample("z1", self.bottom.posterior((x, z2)))

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z2 | x): the top layer, for the VampPrior and the latent-space tools."""
        return self.top.posterior(x)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return self.top.code(x)

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z1, z2): each layer's representative code, the top one first as drawn."""
        z2 = self.top.code(x)
        return self.bottom.code((x, z2)), z2

    @property
    def flows(self):
        return getattr(self.top, "flows", None)
