"""Likelihoods p(x|z) given the decoder's output.

A likelihood turns decoder parameters of shape ``(..., *param_shape)`` into a Pyro
distribution whose event shape is the image shape ``(C, H, W)``, so one data point is one
event and log-probabilities are summed over pixels (nats per image).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyro_vae.errors import UserInputError


class BernoulliLikelihood:
    """p(x|z) = prod_pixels Bernoulli(x; sigmoid(logits)), for binary images.

    Parameterized by logits (not probabilities) so that log p(x|z) is computed as a stable
    ``-softplus`` rather than ``log(sigmoid(.))``. Support is {0, 1}: grey values are refused
    (see :meth:`check_support`) instead of silently scored as a "relaxed" Bernoulli.
    """

    default_binarize = "dynamic"

    def param_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(image_shape)

    def __call__(self, logits: torch.Tensor) -> dist.TorchDistribution:
        # Support is checked once on the data set (check_support), not on every batch.
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(3)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def check_support(self, images: torch.Tensor, binarize: str) -> None:
        """Refuse data that is not binary after ``binarize`` (uint8 images, 0..255)."""
        if binarize != "none":
            return  # every binarization mode produces exactly 0 or 1
        grey = ((images != 0) & (images != 255)).sum().item()
        if grey:
            raise UserInputError(
                f"the bernoulli likelihood needs binary pixels, but {grey} pixels are grey with "
                "binarize='none'; choose --binarize dynamic, static or threshold"
            )
