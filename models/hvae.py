"""A two-level hierarchical VAE as a Pyro model.

    z2_n ~ p(z2),   z1_n | z2_n ~ N(μ_θ(z2_n), diag σ_θ(z2_n)²),   x_n | z1_n ~ p_θ(x | z1_n)

The generative half of Burda et al.'s two-stochastic-layer architecture (2016, "Importance
Weighted Autoencoders", section 5), with any registry prior on the top layer (the
VampPrior included, as in Tomczak & Welling 2018) and any likelihood and decoder at the
bottom. Sites ``z2``, ``z1`` and ``x`` all sit in ``pyro.plate("data")``, so the
importance-sampled log-likelihood covers both layers.

The top layer z2 is the model's "code": the prior, :meth:`decode_mean` and the latent-space
tools work in it, decoding through the mean of p(z1 | z2). :class:`TwoLayerModel` holds
the program and those views; the VampPrior paper's variant (``pyro_vae.models.hvae_skip``) shares
it and decodes from both layers.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro_vae.models.vae import VAEModel, number_of_images
from torch import nn

from pyro_vae.nn import mlp, positive


class TwoLayerModel(VAEModel):
    """What the two-layer models share: the Pyro program over z2 -> z1 -> x and the views
    of it. A subclass gives ``bottom(z2)``, p(z1 | z2), and ``decoder_input(z1, z2)``, what
    its decoder reads; its guide gives ``codes(x)``, one (z1, z2) per image."""

    def bottom(self, z2: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def decoder_input(self, z1: torch.Tensor, z2: torch.Tensor):
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor | None = None, num_samples: int | None = None
    ) -> torch.Tensor:
        pyro.module("model", self)
        n = number_of_images(x, num_samples)
        with pyro.plate("data", n, dim=-1):
            z2 = pyro.sample("z2", self.prior((n,)))
            z1 = pyro.sample("z1", self.bottom(z2))
            return pyro.sample(
                "x", self.likelihood(self.decoder(self.decoder_input(z1, z2))), obs=x
            )

    def decode(self, z2: torch.Tensor):
        """p(x | z1 = E[z1 | z2], z2) for top-level codes z2."""
        return self.likelihood(self.decoder(self.decoder_input(self.bottom(z2).mean, z2)))

    @torch.no_grad()
    def decode_mean(self, z2: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(self.decoder_input(self.bottom(z2).mean, z2)))

    @torch.no_grad()
    def reconstruct(self, guide: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """E[x | z1, z2] at the guide's codes for x: through z1, which carries the detail
        (going through z2 alone would keep only what the top layer encodes)."""
        return self.likelihood.mean(self.decoder(self.decoder_input(*guide.codes(x))))

    @torch.no_grad()
    def sample_means(self, num_samples: int) -> torch.Tensor:
        """E[x | z1, z2] for z2 ~ p(z2), z1 ~ p(z1 | z2)."""
        z2 = self.prior(()).sample((num_samples,))
        z1 = self.bottom(z2).sample()
        return self.likelihood.mean(self.decoder(self.decoder_input(z1, z2)))


class HierarchicalVAEModel(TwoLayerModel):
    def __init__(
        self,
        prior: nn.Module,
        decoder: nn.Module,
        likelihood,
        image_shape,
        latent_dim: int,
        hidden_dims: list[int],
        activation: str,
    ):
        # prior: over z2; decoder: z1 -> likelihood parameters
        super().__init__(prior, decoder, likelihood, image_shape)
        self.bottom_dim = latent_dim
        # p(z1 | z2): a network from z2 to the mean and (softplus) scale of z1
        self.conditional = mlp([prior.latent_dim, *hidden_dims, 2 * latent_dim], activation, False)

    def bottom(self, z2: torch.Tensor) -> dist.TorchDistribution:
        loc, raw_scale = self.conditional(z2).chunk(2, dim=-1)
        return dist.Normal(loc, positive(raw_scale, 1e-4), validate_args=False).to_event(1)

    def decoder_input(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Burda et al.'s chain decodes from z1 alone."""
        return z1
