"""The two-level VAE of the VampPrior paper, whose decoder reads both layers.

    z2_n ~ p(z2),   z1_n | z2_n ~ N(μ_θ(z2_n), diag σ_θ(z2_n)²),   x_n ~ p_θ(x | z1_n, z2_n)

Tomczak & Welling (2018, "VAE with a VampPrior", section 3.2 and figure 1b): the top layer z2
carries the prior (the VampPrior, whose components are the guide's q(z2 | u_k), or N(0, I)),
and the image is decoded from both layers, ``decoder((z1, z2))``, a
:class:`SkipDecoder`. Its guide (``pyro_vae.guides.hierarchical_skip``) infers the top layer first,
q(z2 | x) q(z1 | x, z2). This differs from :mod:`pyro_vae.models.hvae`, Burda et al.'s chain
p(z2) p(z1|z2) p(x|z1) with the guide x -> z1 -> z2.

Sites ``z2``, ``z1`` and ``x`` all sit in ``pyro.plate("data")``, so the importance-sampled
log-likelihood covers both layers; vectorized particles broadcast through every network.
The networks follow the authors' ``models/VAE_2level.py`` (github.com/jmtomczak/vae_vampprior)
for ``--hidden-dims 300 300`` and gated layers: p(z1|z2) is z2 -> 300 -> 300 -> (μ, σ), and
p(x|z1,z2) joins z1 -> 300 and z2 -> 300 into 600 -> 300 -> the likelihood's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro_vae.models.hvae import TwoLayerModel
from torch import nn

from pyro_vae.nn import SCALE_LINKS, mlp


def joined(*features: torch.Tensor) -> torch.Tensor:
    """Feature vectors concatenated along the last dimension, their batch shapes broadcast
    (an image's features ``(N, H)`` beside a particle batch ``(P, N, H)``)."""
    batch = torch.broadcast_shapes(*(f.shape[:-1] for f in features))
    return torch.cat([f.expand(*batch, f.shape[-1]) for f in features], dim=-1)


class SkipDecoder(nn.Module):
    """p(x | z1, z2)'s parameters from both layers: each layer through one activated layer
    of width ``hidden_dims[-1]``, joined, then ``2·hidden_dims[-1] -> reversed(hidden_dims[:-1])
    -> param_shape`` (the last layer linear). Called on the pair ``(z1, z2)``."""

    def __init__(
        self,
        latent_dims: tuple[int, int],
        param_shape: Sequence[int],
        hidden_dims: Sequence[int],
        activation: str,
        gated: bool,
    ):
        super().__init__()
        self.param_shape = tuple(param_shape)
        width = hidden_dims[-1]
        self.bottom_in = mlp([latent_dims[0], width], activation, True, gated)
        self.top_in = mlp([latent_dims[1], width], activation, True, gated)
        sizes = [2 * width, *reversed(hidden_dims[:-1]), math.prod(self.param_shape)]
        self.net = mlp(sizes, activation, activate_last=False, gated=gated)

    def forward(self, latents: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        z1, z2 = latents
        return self.net(joined(self.bottom_in(z1), self.top_in(z2))).unflatten(-1, self.param_shape)

    def start_output_at(self, bias: torch.Tensor) -> None:
        """Set the output layer's bias to ``bias`` (``param_shape``)."""
        with torch.no_grad():
            self.net[-1].bias.copy_(bias.reshape(-1))


class SkipHierarchicalVAEModel(TwoLayerModel):
    """p(z2) p(z1|z2) p(x|z1,z2) as a Pyro model; ``decoder`` is a :class:`SkipDecoder`.

    ``hidden_dims`` and ``gated`` shape p(z1|z2)'s network; ``scale_link`` (a name of
    ``pyro_vae.nn.SCALE_LINKS``) turns its raw output into σ, as the guide's do.
    """

    def __init__(
        self,
        prior: nn.Module,
        decoder: SkipDecoder,
        likelihood,
        image_shape,
        latent_dim: int,
        hidden_dims: Sequence[int],
        activation: str,
        gated: bool,
        scale_link: str,
    ):
        super().__init__(prior, decoder, likelihood, image_shape)
        self.bottom_dim = latent_dim
        self.conditional = mlp([prior.latent_dim, *hidden_dims], activation, True, gated)
        self.bottom_loc = nn.Linear(hidden_dims[-1], latent_dim)
        self.bottom_scale = nn.Linear(hidden_dims[-1], latent_dim)
        self.scale_link = SCALE_LINKS[scale_link]

    def bottom(self, z2: torch.Tensor) -> dist.TorchDistribution:
        """p(z1 | z2)."""
        hidden = self.conditional(z2)
        scale = self.scale_link(self.bottom_scale(hidden))
        return dist.Normal(self.bottom_loc(hidden), scale, validate_args=False).to_event(1)

    def decoder_input(
        self, z1: torch.Tensor, z2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder reads both layers."""
        return z1, z2
