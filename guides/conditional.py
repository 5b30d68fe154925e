"""Guides of the class-conditional models (``pyro_vae.models.conditional``).

    m2:    q_φ(y | x) q_φ(z | x, y)     q(y|x) = Cat(softmax(classifier(x)))
    cvae:             q_φ(z | x, y)

q(z | x, y) is any z-family of the registry: its encoder is a
:class:`LabelConditionedEncoder`, which reads the image through the registry's encoder
and joins the label's one-hot code after it (so under enumeration the image network runs
once, not once per class). The label site ``y`` is marked for parallel enumeration:
``TraceEnum_ELBO`` sums over it exactly, while estimators that sample (``Trace_ELBO``,
the brute-force importance estimate) draw it from q(y|x).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.errors import UserInputError
from pyro_vae.nn import activation, linear_with_label


class LabelConditionedEncoder(nn.Module):
    """Features of an image and its label: ``encoder(x)`` joined with ``onehot(y)`` through
    one activated linear layer, ``act(W [encoder(x); onehot(y)] + b)``. Called on the pair
    ``(x, y)``; ``out_features`` as the encoder's. The join is computed as
    ``W_h encoder(x) + b + W_y[:, y]`` (:func:`pyro_vae.nn.linear_with_label`): under
    enumeration the image's product is shared by the classes."""

    def __init__(self, encoder: nn.Module, num_classes: int, activation_name: str):
        super().__init__()
        self.encoder = encoder
        self.num_classes = num_classes
        self.out_features = encoder.out_features
        self.join = nn.Sequential(
            nn.Linear(encoder.out_features + num_classes, encoder.out_features),
            activation(activation_name),
        )

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = inputs
        layer, act = self.join
        return act(linear_with_label(layer, self.encoder(x), y, self.num_classes))


class ClassConditionalGuide(nn.Module):
    """q(y|x) q(z|x,y) (with a ``classifier``: m2) or q(z|x,y) (cvae), as a Pyro guide:
    ``guide(x, y)`` with y observed in the model, ``guide(x)`` with y latent (m2);
    ``guide(x, y, labels_only=True)`` observes the labels under q(y|x) and draws no code."""

    def __init__(self, family: nn.Module, classifier: nn.Module | None, num_classes: int):
        super().__init__()
        self.family = family  # a registry guide whose encoder is a LabelConditionedEncoder
        self.classifier = classifier  # images -> class logits
        self.num_classes = num_classes
        self.latent_dim = family.latent_dim

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, labels_only: bool = False
    ) -> torch.Tensor | None:
        pyro.module("guide", self)
        with pyro.plate("data", x.shape[0], dim=-1):
            if labels_only:
                # A model of the labels alone, y observed under q(y|x): its Trace_ELBO is
                # m2's classification term -Σ log q(y|x) (pyro_vae.semisupervised). Being
                # this program, not a method, it runs under whatever handlers wrap the guide.
                pyro.sample("y", self.label_posterior(x), obs=y)
                return None
            if y is None:
                y = pyro.sample("y", self.label_posterior(x), infer={"enumerate": "parallel"})
            return pyro.sample("z", self.family.posterior((x, y)))

    @property
    def classifies(self) -> bool:
        """Whether the guide holds q(y | x) (m2; pyro_vae.labels)."""
        return self.classifier is not None

    def label_posterior(self, x: torch.Tensor) -> dist.Categorical:
        """q(y | x)."""
        if self.classifier is None:
            raise UserInputError(
                "the cvae guide is q(z | x, y) and has no classifier: give the labels y"
            )
        return dist.Categorical(logits=self.classifier(x), validate_args=False)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_y q(y | x)."""
        return self.label_posterior(x).logits.argmax(-1)

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """q(z | x, y); y None: the guide's own class for x (m2)."""
        return self.family.posterior((x, self.predict(x) if y is None else y))

    def code(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """q(z | x, y)'s representative code (its family's ``code``)."""
        return self.family.code((x, self.predict(x) if y is None else y))
