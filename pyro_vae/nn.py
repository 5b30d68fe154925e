"""Network building blocks shared by decoders (``models/``) and encoders (``guides/``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pyro_vae.errors import UserInputError

ACTIVATIONS = {
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise UserInputError(
            f"unknown activation {name!r}; valid activations: {', '.join(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]()


def mlp(sizes: Sequence[int], activation_name: str, activate_last: bool) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ...``, the activation between them.

    ``activate_last`` also applies it after the final layer (a feature extractor), rather
    than leaving the final layer linear (a parameter head).
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if activate_last or i < len(sizes) - 2:
            layers.append(activation(activation_name))
    return nn.Sequential(*layers)
