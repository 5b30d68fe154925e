"""Likelihoods p(x|z) given the decoder's output.

A likelihood turns decoder parameters of shape ``(..., *param_shape)`` into a Pyro
distribution whose event shape is the image shape ``(C, H, W)``, so one data point is one
event and log-probabilities are summed over pixels (nats per image).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.nn import functional as F

from pyro_vae.errors import UserInputError

IMAGE_DIMS = 3  # (C, H, W): one image is one event


class BernoulliImage(dist.TorchDistribution):
    """Independent Bernoulli pixels of an image, parameterized by logits.

        log p(x | logits) = Σ_pixels [x · logits − softplus(logits)]

    The same density as ``Bernoulli(logits=logits).to_event(3)``, computed as the negated sum
    of ``binary_cross_entropy_with_logits``: the negation touches one number per image rather
    than one per pixel, which is a measurable share of a K=5000 log-likelihood estimate.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.independent(constraints.boolean, IMAGE_DIMS)
    has_rsample = False

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None):
        self.logits = logits
        shape = logits.shape
        super().__init__(shape[:-IMAGE_DIMS], shape[-IMAGE_DIMS:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> BernoulliImage:
        logits = self.logits.expand(torch.Size(batch_shape) + self.event_shape)
        return BernoulliImage(logits, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def variance(self) -> torch.Tensor:
        p = torch.sigmoid(self.logits)
        return p * (1 - p)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            return torch.bernoulli(torch.sigmoid(self.logits).expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        cross_entropy = F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        return -cross_entropy.flatten(-IMAGE_DIMS).sum(-1)


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
        return BernoulliImage(logits, validate_args=False)

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
