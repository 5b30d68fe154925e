"""Class-conditional generative models: Kingma et al.'s M2 and the conditional VAE.

    m2:    y_n ~ Cat(1/C),  z_n ~ p(z),  x_n | y_n, z_n ~ p_θ(x | y_n, z_n)
    cvae:                   z_n ~ p(z),  x_n | y_n, z_n ~ p_θ(x | y_n, z_n)     (y_n given)

(Kingma, Rezende, Mohamed & Welling 2014, "Semi-Supervised Learning with Deep Generative
Models", section 3.1.2; Sohn, Lee & Yan 2015, "Learning Structured Output Representation
using Deep Conditional Generative Models".) The decoder reads ``[z, onehot(y)]``.

Under m2 the label is a latent variable of the model. ``model(x, y)`` scores labelled
images (y observed); ``model(x)`` leaves y latent, and the guide's q(y|x) proposes it:
Pyro's ``TraceEnum_ELBO`` sums it out exactly by parallel enumeration (y then arrives as
``arange(C)`` shaped ``(C, 1, ..., 1)`` and every tensor after it gains that dimension).
Under cvae y is always given and has no prior: the model is p(x | y).

Sites: ``y`` (m2 only), ``z``, ``x``, all in ``pyro.plate("data")`` at dim -1.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro_vae.models.vae import VAEModel, number_of_images
from torch import nn

from pyro_vae.errors import UserInputError
from pyro_vae.nn import with_label


class ClassConditionalModel(VAEModel):
    """p(y) p(z) p(x|y,z) with ``label_prior=True`` (m2), else p(z) p(x|y,z) (cvae).

    ``model(x, y)``: y observed; ``model(x)``: y latent (m2 only); ``model(y=y)`` or
    ``model(num_samples=N)`` generates.
    """

    def __init__(
        self,
        prior: nn.Module,
        decoder: nn.Module,
        likelihood,
        image_shape,
        num_classes: int,
        label_prior: bool,
    ):
        super().__init__(prior, decoder, likelihood, image_shape)  # decoder: z and onehot(y)
        self.num_classes = num_classes
        self.label_prior = label_prior

    def forward(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        pyro.module("model", self)
        n = number_of_images(x if x is not None else y, num_samples)
        with pyro.plate("data", n, dim=-1):
            if self.label_prior:
                uniform = torch.zeros(self.num_classes, device=self.prior_device)
                y = pyro.sample("y", dist.Categorical(logits=uniform).expand([n]), obs=y)
            elif y is None:
                raise UserInputError("the cvae model is p(x | y): give the labels y of the images")
            z = pyro.sample("z", self.prior((n,)))
            return pyro.sample("x", self.decode(z, y), obs=x)

    class_conditional = True  # the decoder reads y (pyro_vae.labels)

    @property
    def needs_labels(self) -> bool:
        """Whether the model is p(x | y) (cvae): every call takes the labels."""
        return not self.label_prior

    @property
    def prior_device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def decode(self, z: torch.Tensor, y: torch.Tensor):
        """p(x | y, z) for latent codes z of class y (broadcast against each other)."""
        return self.likelihood(self.decoder(with_label(z, y, self.num_classes)))

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(with_label(z, y, self.num_classes)))

    @torch.no_grad()
    def reconstruct(
        self, guide: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """E[x | y, z = the guide's code for (x, y)]; y None: the guide's class (m2)."""
        y = guide.predict(x) if y is None else y
        return self.decode_mean(guide.code(x, y), y)

    @torch.no_grad()
    def sample_means(self, num_samples: int) -> torch.Tensor:
        """E[x | y, z] for z ~ p(z) and y cycling through the classes 0, 1, ..., C-1, 0, ..."""
        y = torch.arange(num_samples, device=self.prior_device) % self.num_classes
        return self.decode_mean(self.prior(()).sample((num_samples,)), y)

    @torch.no_grad()
    def class_samples(self, per_class: int) -> torch.Tensor:
        """E[x | y, z] with one row per class and one z ~ p(z) per column, shared down the
        column (so a column shows one "style" in every class): ``(C * per_class, ...)``."""
        z = self.prior(()).sample((per_class,))
        y = torch.arange(self.num_classes, device=z.device)[:, None]
        return self.decode_mean(z[None], y).flatten(0, 1)
