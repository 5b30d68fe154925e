"""The generative model p(z) p_θ(x|z) as a Pyro model.

    z_n ~ p(z),   x_n | z_n ~ p_θ(x | z_n) = likelihood(decoder(z_n)),   n = 1..N

Sites: ``z`` (latent, event shape ``(latent_dim,)``) and ``x`` (observed, event shape
``(C, H, W)``), both inside ``pyro.plate("data")`` at dim -1, so leftward batch dimensions
(vectorized particles) broadcast through the model unchanged.
"""

from __future__ import annotations

import pyro
import torch
from torch import nn


def number_of_images(x: torch.Tensor | None, num_samples: int | None) -> int:
    """The data plate's size: the observed batch's, or ``num_samples`` when generating."""
    if x is not None:
        return x.shape[0]
    if num_samples is None:
        raise ValueError("pass the observed images x or num_samples")
    return num_samples


class VAEModel(nn.Module):
    """A Pyro model built from a prior, a decoder and a likelihood.

    Call it as a Pyro model: ``model(x)`` scores observed images ``x`` of shape
    ``(N, C, H, W)``; ``model(num_samples=N)`` generates N images. ``pyro.module`` registers
    every parameter (decoder and any learnable prior or likelihood) with Pyro.
    """

    def __init__(self, prior: nn.Module, decoder: nn.Module, likelihood, image_shape):
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        # An nn.Module likelihood (learned per-pixel scale, say) becomes a submodule here, so
        # pyro.module("model", self) registers its parameters too.
        self.likelihood = likelihood
        self.image_shape = tuple(image_shape)
        self.latent_dim = prior.latent_dim

    # How the model uses labels (pyro_vae.labels): not at all; the class-conditional models
    # (pyro_vae.models.conditional) say otherwise.
    class_conditional = False
    needs_labels = False

    def forward(
        self, x: torch.Tensor | None = None, num_samples: int | None = None
    ) -> torch.Tensor:
        pyro.module("model", self)
        n = number_of_images(x, num_samples)
        with pyro.plate("data", n, dim=-1):
            z = pyro.sample("z", self.prior((n,)))
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def decode(self, z: torch.Tensor):
        """p(x | z) for latent codes z: the likelihood at the decoder's output."""
        return self.likelihood(self.decoder(z))

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z], the image a latent code stands for."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, guide: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = the guide's code for x]: the image x comes back as."""
        return self.decode_mean(guide.code(x))

    @torch.no_grad()
    def sample_means(self, num_samples: int) -> torch.Tensor:
        """E[x | z] for z drawn from the prior: the usual "samples" of a VAE."""
        return self.decode_mean(self.prior(()).sample((num_samples,)))
