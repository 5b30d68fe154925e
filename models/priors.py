"""Priors p(z) over the latent code.

A prior is an ``nn.Module`` whose ``forward(batch_shape)`` returns a Pyro distribution with
that batch shape and event shape ``(latent_dim,)``. Learnable priors keep their parameters
on the module, which the model registers with ``pyro.module("model", ...)``; a prior only
needs ``log_prob`` of the guide's codes for training and ``sample`` for generation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro.distributions as dist
import torch
from pyro.distributions import transforms
from pyro.nn import AutoRegressiveNN
from torch import nn

from pyro_vae.errors import UserInputError
from pyro_vae.nn import positive


class StandardNormal(dist.Normal):
    """N(0, 1) in every coordinate, its density computed directly:

        log p(z) = -z²/2 - log √(2π)

    The same density as ``Normal(0, 1)``, in three tensor operations rather than the
    general form's subtraction of a zero mean and division by a unit variance (a tenth of a
    training step's arithmetic beyond the networks, for the MLP VAE). A subclass of Normal
    (its ``loc`` and ``scale`` are 0 and 1), so sampling, ``expand`` and the analytic
    KL(Normal ‖ Normal) that TraceMeanField_ELBO looks up are Normal's.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_p = -0.5 * value.pow(2) - 0.5 * math.log(2 * math.pi)
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))


class StandardNormalPrior(nn.Module):
    """p(z) = N(z; 0, I), as in Kingma & Welling (2014), "Auto-Encoding Variational Bayes"."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        # Buffers, not constants, so that .to(device) moves them with the model.
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self, batch_shape: torch.Size | tuple[int, ...]) -> dist.TorchDistribution:
        normal = StandardNormal(self.loc, self.scale)
        return normal.expand((*batch_shape, self.latent_dim)).to_event(1)


class LearnedNormalPrior(nn.Module):
    """p(z) = N(z; μ, diag σ²) with μ and σ learned."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.raw_scale = nn.Parameter(torch.full((latent_dim,), 0.5413))  # softplus⁻¹(1)

    def forward(self, batch_shape) -> dist.TorchDistribution:
        normal = dist.Normal(self.loc, positive(self.raw_scale, 1e-4))
        return normal.expand((*batch_shape, self.latent_dim)).to_event(1)


class _Mixture(dist.MixtureSameFamily):
    """MixtureSameFamily over codes (event dim 1) that expands each code against the K
    components itself, since conditional flows do not broadcast a code of shape
    (..., 1, D) against their K contexts.

    Diagonal-normal components shared across the batch (the VampPrior of a diag-normal
    guide, the mixture of Gaussians) are scored without the (..., K, D) broadcast:

        log N(z; μ_k, diag σ_k²) = -½ (z²·σ_k⁻² - 2 z·(μ_k σ_k⁻²) + μ_k²·σ_k⁻²)
                                   - Σ_d log σ_kd - (D/2) log 2π

    two matrix products over the D coordinates instead of K·D elementwise terms per code
    (with 500 components of 40 dimensions, a K = 5000 estimate of log p(x) runs 5 to 6
    times faster and a training step 1.7 to 1.9 times: BENCHMARKS.md). The three terms
    are large and cancel where z is near μ_k with a small σ_k, so they are formed in
    float64: as close to the exact value as the float32 broadcast (tests/test_priors.py).
    """

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        log_weights = torch.log_softmax(self.mixture_distribution.logits, -1)
        return torch.logsumexp(self._component_log_probs(x) + log_weights, -1)

    def _component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log p_k(x) for every component k, shape (..., K)."""
        shared = _shared_diagonal_normal(self.component_distribution)
        if shared is not None:
            return _diagonal_normal_log_probs(x, *shared)
        components = self.mixture_distribution.logits.shape[-1]
        x = x.unsqueeze(-2).expand(*x.shape[:-1], components, x.shape[-1])
        return self.component_distribution.log_prob(x)


def _shared_diagonal_normal(
    components: dist.TorchDistribution,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(μ, σ) of shape (K, D) where ``components`` is Normal(μ, σ).to_event(1) whose batch
    dimensions before K hold one set of K components (each of size 1 or an expansion, of
    stride 0); else None."""
    if not (
        isinstance(components, dist.Independent)
        and components.reinterpreted_batch_ndims == 1
        and type(components.base_dist) in (dist.Normal, torch.distributions.Normal)
    ):
        return None
    loc, scale = components.base_dist.loc, components.base_dist.scale
    if loc.dim() < 2 or any(
        size != 1 and stride != 0
        for t in (loc, scale)
        for size, stride in zip(t.shape[:-2], t.stride()[:-2])
    ):
        return None
    first = (0,) * (loc.dim() - 2)
    return loc[first], scale[first]


def _diagonal_normal_log_probs(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor):
    """log N(x; loc_k, diag scale_k²) for each of the K rows of ``loc`` and ``scale``
    (shape (K, D)), x of shape (..., D): shape (..., K), by the expansion in _Mixture."""
    x64, loc64, scale64 = x.double(), loc.double(), scale.double()
    precision = scale64.pow(-2)
    quadratic = (
        (x64 * x64) @ precision.T
        - 2 * x64 @ (loc64 * precision).T
        + (loc64 * loc64 * precision).sum(-1)
    )
    log_normalizer = scale64.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)
    return (-0.5 * quadratic - log_normalizer).to(x.dtype)


def _mixture(components: dist.TorchDistribution, logits: torch.Tensor, batch_shape):
    return _Mixture(dist.Categorical(logits=logits), components).expand(tuple(batch_shape))


class MixtureOfGaussiansPrior(nn.Module):
    """p(z) = Σ_k π_k N(z; μ_k, diag σ_k²) with K learned components and learned weights."""

    def __init__(self, latent_dim: int, components: int):
        super().__init__()
        self.latent_dim = latent_dim
        # Spread initial means so the components do not start identical.
        self.locs = nn.Parameter(torch.randn(components, latent_dim))
        self.raw_scales = nn.Parameter(torch.full((components, latent_dim), 0.5413))
        self.logits = nn.Parameter(torch.zeros(components))

    def forward(self, batch_shape) -> dist.TorchDistribution:
        components = dist.Normal(self.locs, positive(self.raw_scales, 1e-4)).to_event(1)
        return _mixture(components, self.logits, batch_shape)


class VampPrior(nn.Module):
    """The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior"):

        p(z) = (1/K) Σ_k q_φ(z | u_k),   u_1..u_K learned pseudo-inputs

    The pseudo-inputs are a model parameter (registered with the model); they go through
    the guide's own encoder, whose parameters the guide registers, so gradients of log p(z)
    reach both. ``components(u)`` maps pseudo-inputs to q(z | u) with batch shape (K,).
    The guide is held without registering it as a submodule of the model, so Pyro sees each
    parameter under one name. The guide's density must score any z (not only its own
    samples): planar and radial flows cannot.

    ``pseudo_inputs`` says how the parameter w becomes u: ``"free"``, u = w, starting as grey
    noise 0.5 ± 0.05 and free to leave the pixel range; ``"hardtanh"``, u = min(max(w, 0), 1),
    w starting at 0.05 ± 0.01, as in the authors' code (github.com/jmtomczak/vae_vampprior,
    ``models/Model.py`` and ``utils/load_data.py``), where a pixel pushed out of [0, 1]
    stays at the bound (the clamp passes it no gradient).
    """

    def __init__(
        self,
        latent_dim: int,
        components: Callable[[torch.Tensor], dist.TorchDistribution],
        image_shape: tuple[int, ...],
        num_pseudo_inputs: int,
        pseudo_inputs: str = "free",
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.clamped = {"free": False, "hardtanh": True}[pseudo_inputs]
        loc, spread = (0.05, 0.01) if self.clamped else (0.5, 0.05)
        self.pseudo_inputs = nn.Parameter(
            loc + spread * torch.randn(num_pseudo_inputs, *image_shape)
        )  # w, from which inputs() makes u
        self._components = [components]  # a list: not an nn.Module attribute

    def inputs(self) -> torch.Tensor:
        """The pseudo-inputs u_1..u_K, shape (K, *image_shape)."""
        if self.clamped:
            return nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)
        return self.pseudo_inputs

    def forward(self, batch_shape) -> dist.TorchDistribution:
        u = self.inputs()
        logits = torch.zeros(u.shape[0], device=u.device)
        return _mixture(self._components[0](u), logits, batch_shape)


class FlowPrior(nn.Module):
    """p(z): N(0, I) pushed through ``depth`` learned affine autoregressive flows.

    Used in the masked-autoregressive direction (each flow enters inverted), so the density
    of a guide's code costs one network pass per flow, while sampling, needed only for
    generation, inverts autoregressively (Papamakarios et al. 2017, "Masked Autoregressive
    Flow for Density Estimation").
    """

    def __init__(self, latent_dim: int, depth: int, hidden_dims: list[int]):
        super().__init__()
        self.latent_dim = latent_dim
        self.flows = nn.ModuleList(
            transforms.AffineAutoregressive(AutoRegressiveNN(latent_dim, list(hidden_dims)))
            for _ in range(depth)
        )
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self, batch_shape) -> dist.TorchDistribution:
        base = dist.Normal(self.loc, self.scale).expand((*batch_shape, self.latent_dim))
        return dist.TransformedDistribution(base.to_event(1), [flow.inv for flow in self.flows])


def vamp_components(guide: nn.Module) -> Callable[[torch.Tensor], dist.TorchDistribution]:
    """q(z | u) of ``guide`` for pseudo-inputs, refusing families that cannot score any z."""
    flows = getattr(guide, "flows", None)
    if flows is not None and any(
        isinstance(f, (transforms.ConditionalPlanar, transforms.ConditionalRadial)) for f in flows
    ):
        raise UserInputError(
            "the vamp prior scores codes under the guide's density, which planar and radial "
            "flows cannot do (they have no inverse); use another guide with --prior vamp"
        )
    return guide.posterior
