"""Likelihoods p(x|z) given the decoder's output.

A likelihood turns decoder parameters of shape ``(..., *param_shape)`` into a Pyro
distribution whose event shape is the image shape ``(C, H, W)``, so one data point is one
event and log-probabilities are summed over pixels (nats per image). Every likelihood says
which data it accepts (``check_support``), which binarization suits it by default, and
whether its data are discrete (then log-likelihoods are also reported in bits per dim).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from pyro_vae.errors import UserInputError

IMAGE_DIMS = 3  # (C, H, W): one image is one event


class BernoulliImage(dist.TorchDistribution):
    """Independent Bernoulli pixels of an image, parameterized by logits.

        log p(x | logits) = Σ_pixels [x · logits − softplus(logits)]

    The same density as ``Bernoulli(logits=logits).to_event(3)``, computed as the negated sum
    of ``binary_cross_entropy_with_logits`` where logits and images match pixel for pixel,
    and as the formula above, its first term a batched product, where one image is scored
    under many particles' logits; the negation touches one number per image rather than
    one per pixel.
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
        logits, x = self.logits.flatten(-IMAGE_DIMS), value.flatten(-IMAGE_DIMS)
        if logits.shape == x.shape:
            # One logit per observed pixel (training): the fused kernel and its backward.
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        # Particles sharing an image (log-likelihood estimates): Σ x·logits as a batched
        # product never broadcasts x to the particles, and only softplus makes a tensor of
        # the logits' size; half the time of the cross-entropy at K = 5000.
        return torch.einsum("...d,...d->...", logits, x) - F.softplus(logits).sum(-1)


class DiscretizedLogistic(dist.TorchDistribution):
    """8-bit pixels under a logistic density integrated over each pixel's bin.

        x ∈ {0, 1/255, …, 1};  p(x) = σ((x + h − μ)/s) − σ((x − h − μ)/s),  h = 1/510,

    with the bin of 0 extended to −∞ and that of 1 to +∞ (Salimans et al. 2017,
    "PixelCNN++", one logistic per pixel). The bin mass is formed in log space where it is
    small, so the density stays finite for confident decoders.
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = constraints.independent(constraints.unit_interval, IMAGE_DIMS)
    has_rsample = False
    half_bin = 1 / 510

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, validate_args=None):
        self.loc, self.log_scale = torch.broadcast_tensors(loc, log_scale)
        shape = self.loc.shape
        super().__init__(shape[:-IMAGE_DIMS], shape[-IMAGE_DIMS:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> DiscretizedLogistic:
        shape = torch.Size(batch_shape) + self.event_shape
        return DiscretizedLogistic(self.loc.expand(shape), self.log_scale.expand(shape), False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc.clamp(0, 1)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            u = torch.rand(shape, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc + self.log_scale.exp() * (torch.log(u) - torch.log1p(-u))
            return (x.clamp(0, 1) * 255).round() / 255

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        inv_scale = torch.exp(-self.log_scale)
        centered = value - self.loc
        upper = inv_scale * (centered + self.half_bin)
        lower = inv_scale * (centered - self.half_bin)
        log_cdf_upper = F.logsigmoid(upper)  # log σ(upper): the mass below the bin's top
        log_survival_lower = F.logsigmoid(-lower)  # log(1 − σ(lower)): the mass above its bottom
        mass = torch.sigmoid(upper) - torch.sigmoid(lower)
        # Where the bin holds almost no mass, use the density at its centre times its width.
        log_density_mid = (
            -inv_scale * centered.abs()
            - self.log_scale
            - 2 * F.softplus(-inv_scale * centered.abs())
        )
        interior = torch.where(
            mass > 1e-5,
            torch.log(mass.clamp_min(1e-12)),
            log_density_mid + math.log(2 * self.half_bin),
        )
        log_p = torch.where(
            value < self.half_bin,
            log_cdf_upper,
            torch.where(value > 1 - self.half_bin, log_survival_lower, interior),
        )
        return log_p.flatten(-IMAGE_DIMS).sum(-1)


class BernoulliLikelihood:
    """p(x|z) = Π_pixels Bernoulli(x; sigmoid(logits)), for binary images.

    Logits (not probabilities), so log p(x|z) is a stable ``-softplus``. Support is {0, 1}:
    grey values are refused (see :meth:`check_support`), not scored as a "relaxed" Bernoulli.
    """

    default_binarize = "dynamic"
    discrete = True

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
                "binarize='none'; choose --binarize dynamic, static or threshold, or a likelihood "
                "for grey values (continuous-bernoulli, gaussian, laplace, discretized-logistic)"
            )


class _ContinuousLikelihood:
    """Shared by likelihoods of grey values in [0, 1], which every stored image satisfies."""

    default_binarize = "none"
    discrete = False

    def param_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(image_shape)

    def check_support(self, images: torch.Tensor, binarize: str) -> None:
        """uint8 images divided by 255 always lie in [0, 1]: nothing to refuse."""


class ContinuousBernoulliLikelihood(_ContinuousLikelihood):
    """p(x|z) = Π_pixels CB(x; λ) = C(λ) λ^x (1−λ)^(1−x), x ∈ [0, 1] (Loaiza-Ganem &
    Cunningham 2019, "The continuous Bernoulli"): the properly normalized version of the
    Bernoulli cross-entropy that VAEs often apply to grey images."""

    def __call__(self, logits: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=logits, validate_args=False).to_event(IMAGE_DIMS)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return dist.ContinuousBernoulli(logits=logits, validate_args=False).mean


class _FixedScaleLikelihood(_ContinuousLikelihood):
    """Π_pixels family(x; decoder(z), scale) with one fixed scale; the decoder gives the mean."""

    family: type = dist.Normal

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, loc: torch.Tensor) -> dist.TorchDistribution:
        return self.family(loc, self.scale, validate_args=False).to_event(IMAGE_DIMS)

    def mean(self, loc: torch.Tensor) -> torch.Tensor:
        return loc


class GaussianLikelihood(_FixedScaleLikelihood):
    """p(x|z) = N(x; decoder(z), σ²I) with a fixed σ: the MSE view of a VAE, where the
    reconstruction term is −‖x − x̂‖² / (2σ²) plus a constant."""

    family = dist.Normal


class LaplaceLikelihood(_FixedScaleLikelihood):
    """p(x|z) = Π_pixels Laplace(x; decoder(z), b) with a fixed scale b: an L1 reconstruction."""

    family = dist.Laplace


class LearnedGaussianLikelihood(_FixedScaleLikelihood, nn.Module):
    """p(x|z) = N(x; decoder(z), diag σ²) with one learned σ per pixel (a model parameter,
    registered with the model through ``pyro.module``). The likelihood comes first among the
    bases so that its ``__call__``, not nn.Module's, builds the distribution."""

    def __init__(self, image_shape: tuple[int, ...], initial_scale: float):
        nn.Module.__init__(self)
        self.log_scale = nn.Parameter(torch.full(tuple(image_shape), math.log(initial_scale)))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()


class DiscretizedLogisticLikelihood(_ContinuousLikelihood):
    """8-bit images under a per-pixel discretized logistic; the decoder emits a location and a
    log-scale per pixel (twice the image's channels). Log-likelihoods are reported in nats
    and in bits per dimension."""

    discrete = True

    def param_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        channels, *rest = image_shape
        return (2 * channels, *rest)

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = params.chunk(2, dim=-IMAGE_DIMS)
        return loc, log_scale.clamp(min=-7.0)  # keep the logistic from a zero scale

    def __call__(self, params: torch.Tensor) -> dist.TorchDistribution:
        return DiscretizedLogistic(*self._split(params), validate_args=False)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self._split(params)[0].clamp(0, 1)

    def check_support(self, images: torch.Tensor, binarize: str) -> None:
        """Stored images are 8-bit already: every value is a bin centre k/255."""
