"""The extension interface as code: what each kind of part of the registry must provide.

A part you register (``pyro_vae.register(kind, name, factory)``) is checked against its
kind's protocol each time its factory builds one: a missing attribute or method is one
error naming it, not an ``AttributeError`` deep inside training. Shapes: N images of
``image_shape`` (C, H, W), leftward batch dimensions (particles, chains) allowed
throughout.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import pyro.distributions as dist
import torch


@runtime_checkable
class Prior(Protocol):
    """p(z): ``prior(batch_shape)`` is a distribution of batch shape ``batch_shape`` and
    event shape ``(latent_dim,)``; an ``nn.Module`` if it has parameters."""

    latent_dim: int

    def __call__(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution: ...


@runtime_checkable
class Guide(Protocol):
    """q(z|x) as a Pyro guide (an ``nn.Module``; subclass ``pyro_vae.guides.AmortizedGuide``
    and give ``posterior``): ``guide(x)`` samples site ``z`` in ``pyro.plate("data", N)``;
    ``posterior(x)`` is q(z|x) with batch shape ``(N,)`` and event shape ``(latent_dim,)``,
    reparameterized; ``code(x)`` one representative z per image, ``(N, latent_dim)``."""

    latent_dim: int

    def __call__(self, x: torch.Tensor) -> Any: ...

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution: ...

    def code(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Likelihood(Protocol):
    """p(x|z) from the decoder's output: ``likelihood(params)`` a distribution with event
    shape ``image_shape``; ``param_shape(image_shape)`` what the decoder outputs per image;
    ``mean(params)`` E[x|z]; ``check_support(images, binarize)`` refuses data outside the
    support; ``default_binarize`` ("dynamic", "none", ...); ``discrete`` whether p is a
    mass (then bits per dimension are reported)."""

    default_binarize: str
    discrete: bool

    def __call__(self, params: torch.Tensor) -> dist.TorchDistribution: ...

    def param_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]: ...

    def mean(self, params: torch.Tensor) -> torch.Tensor: ...

    def check_support(self, images: torch.Tensor, binarize: str) -> None: ...


@runtime_checkable
class Encoder(Protocol):
    """An ``nn.Module`` from images ``(..., C, H, W)`` to features ``(..., out_features)``."""

    out_features: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Decoder(Protocol):
    """An ``nn.Module`` from codes ``(..., latent_dim)`` to the likelihood's parameters
    ``(..., *param_shape)``."""

    def __call__(self, z: torch.Tensor) -> torch.Tensor: ...


PROTOCOLS: dict[str, type] = {
    "prior": Prior,
    "guide": Guide,
    "likelihood": Likelihood,
    "encoder": Encoder,
    "decoder": Decoder,
}


def members(protocol: type) -> list[str]:
    """The attributes and methods ``protocol`` asks for, in its order."""
    names = list(getattr(protocol, "__annotations__", {}))
    names += [
        name
        for name, value in vars(protocol).items()
        if callable(value) and (not name.startswith("_") or name == "__call__")
    ]
    return list(dict.fromkeys(names))


def missing_member(kind: str, part: object) -> str | None:
    """The first member of ``kind``'s protocol that ``part`` lacks, or None."""
    protocol = PROTOCOLS.get(kind)
    if protocol is None:
        return None
    for name in members(protocol):
        if name == "__call__":
            if not callable(part):
                return name
        elif not hasattr(part, name):
            return name
    return None
