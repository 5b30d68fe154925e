"""How a model/guide pair uses labels, asked of the objects: this module alone knows how.

The registry's models and guides declare it with attributes, which ``VAEModel`` and the
guides default to False:

- ``model.class_conditional``: the decoder reads a label, p(x | y, z) (m2 and cvae);
- ``model.needs_labels``: every call of the pair takes the labels, ``model(x, y)``: the
  model is p(x | y) (cvae);
- ``guide.classifies``: the guide holds q(y | x), and an unobserved label is summed out or
  drawn from it (m2).

A user's own pair (``pyro_vae.pairs``) need not carry them: for it they read as False.
Everything else (evaluation, training batches, the CLI, the images) asks these functions,
never the config's model name.
"""

from __future__ import annotations

import torch
from torch import nn


def class_conditional(model: nn.Module) -> bool:
    """The model's decoder reads a label: p(x | y, z)."""
    return bool(getattr(model, "class_conditional", False))


def needs_labels(model: nn.Module) -> bool:
    """Every call of the pair takes the labels: the model is p(x | y)."""
    return bool(getattr(model, "needs_labels", False))


def classifies(guide: nn.Module) -> bool:
    """The guide holds a classifier q(y | x)."""
    return bool(getattr(guide, "classifies", False))


def label_arguments(model: nn.Module, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What a program takes after the images: the labels for a model of p(x | y), nothing
    for the others (m2 sums its label out)."""
    return (labels,) if needs_labels(model) else ()
