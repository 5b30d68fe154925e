"""Network building blocks shared by decoders (``models/``) and encoders (``guides/``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
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


def positive(raw: torch.Tensor, minimum: float = 1e-6) -> torch.Tensor:
    """softplus(raw) + minimum: a scale kept off zero, where log-densities and their
    gradients blow up."""
    return nn.functional.softplus(raw) + minimum


def bounded_log_variance_scale(
    raw: torch.Tensor, low: float = -6.0, high: float = 2.0
) -> torch.Tensor:
    """σ = exp(½ hardtanh(raw, low, high)): log σ² kept in [low, high], so that
    e^(low/2) ≤ σ ≤ e^(high/2) (0.0498 ≤ σ ≤ 2.72 by default). The encoders of the VampPrior
    authors' code bound q(z|x) this way (Tomczak & Welling 2018, github.com/jmtomczak/
    vae_vampprior, ``q_z_logvar``: ``Hardtanh(min_val=-6., max_val=2.)``); outside the bounds
    the raw output gets no gradient, as there."""
    return torch.exp(0.5 * nn.functional.hardtanh(raw, low, high))


# How a guide turns its network's raw output into a scale σ: config.guide_scale
# exp: σ = exp(a), unbounded, as in Burda et al.'s code (iwae.py, GaussianSampler.random).
SCALE_LINKS = {
    "softplus": positive,
    "bounded-logvar": bounded_log_variance_scale,
    "exp": torch.exp,
}


# Layers whose weights a scheme of WEIGHT_INITS redraws: each has a weight of shape
# (out, in, *kernel) (in, out, *kernel for a transposed conv) and a bias.
_WEIGHTED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


def he_normal(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """N(0, 2/fan_in) weights, fan_in = the elements of ``weight[0]`` (torch's convention,
    also for a transposed conv): He et al. (2015, "Delving Deep into Rectifiers", eq. 10),
    which keeps the variance of activations through ReLU layers."""
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)


def glorot_uniform(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """U(−a, a) weights, a = √(6 / (fan_in + fan_out)): Glorot & Bengio (2010, eq. 16),
    which keeps activations' and gradients' variances through tanh layers."""
    fan_in, fan_out = math.prod(shape[1:]), shape[0] * math.prod(shape[2:])
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return (2 * torch.rand(shape, generator=generator) - 1) * bound


class WeightInit(NamedTuple):
    draw: Callable[[torch.Size, torch.Generator], torch.Tensor]
    zero_biases: bool  # else torch's biases (uniform in ±1/√fan_in) stay


# The first weights of config.weight_init; "torch" (None) keeps torch's own
# (Kaiming-uniform with a = √5). The VampPrior authors' code draws he-normal weights and
# keeps torch's biases (utils/nn.py, he_init); Burda et al.'s draws glorot-uniform ones
# with zero biases (nnet.py, Linear.random).
WEIGHT_INITS = {
    "torch": None,
    "he-normal": WeightInit(he_normal, zero_biases=False),
    "glorot-uniform": WeightInit(glorot_uniform, zero_biases=True),
}


def initialize_weights(network: nn.Module, scheme: str, seed: int) -> None:
    """Redraw the weight of every linear and conv layer of ``network`` by ``scheme``
    (:data:`WEIGHT_INITS`), from a generator seeded with ``seed``: the same weights on
    every device and every rank, and no draw from the global stream. Biases are zeroed
    or kept as the scheme says; every other parameter (pseudo-inputs, say) stays as built."""
    init = WEIGHT_INITS[scheme]
    if init is None:
        return
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in network.modules():  # a shared layer once
            if isinstance(layer, _WEIGHTED_LAYERS):
                layer.weight.copy_(init.draw(layer.weight.shape, generator))
                if init.zero_biases and layer.bias is not None:
                    layer.bias.zero_()


class GatedDense(nn.Module):
    """h = (Wx + b) ⊙ σ(Vx + c): a gated linear unit (Dauphin et al. 2017), the dense layer
    of the VampPrior paper's networks (Tomczak & Welling 2018, "VAE with a VampPrior")."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * torch.sigmoid(self.gate(x))


def mlp(
    sizes: Sequence[int], activation_name: str, activate_last: bool, gated: bool = False
) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ...``, the activation between them.

    ``activate_last`` also applies it after the final layer (a feature extractor), rather
    than leaving the final layer linear (a parameter head). ``gated``: each activated layer
    is a :class:`GatedDense` instead (its gate is the nonlinearity; ``activation_name`` is
    not used).
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        activated = activate_last or i < len(sizes) - 2
        if gated and activated:
            layers.append(GatedDense(n_in, n_out))
            continue
        layers.append(nn.Linear(n_in, n_out))
        if activated:
            layers.append(activation(activation_name))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """x + conv(act(conv(act(x)))): a pre-activation residual block, channels and size kept
    (He et al. 2016, "Identity Mappings in Deep Residual Networks")."""

    def __init__(self, channels: int, activation_name: str):
        super().__init__()
        self.body = nn.Sequential(
            activation(activation_name),
            nn.Conv2d(channels, channels, 3, padding=1),
            activation(activation_name),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x):
        return x + self.body(x)


def halvings(size: tuple[int, int], stages: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 stage: [size, ceil(size/2), ...], stages + 1 long."""
    sizes = [tuple(size)]
    for _ in range(stages):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def flat_batch(x, event_dims: int):
    """Fold every leading batch dimension into one, for layers that take (N, ...) only."""
    batch = x.shape[:-event_dims]
    return x.reshape(-1, *x.shape[-event_dims:]), batch


# The autocast dtype of each precision name of pyro_vae.config.PRECISIONS.
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def compute_in(module: nn.Module, precision: str) -> nn.Module:
    """Run ``module``'s forward under autocast in ``precision``, its output cast to fp32.

    For the encoder and decoder networks only: their matrix products run in bf16 while
    every distribution is built from fp32 outputs, so log-probabilities stay fp32. The
    forward is wrapped on the instance, so parameter names and checkpoints do not change.
    """
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return module
    forward = module.forward

    def forward_in_precision(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=dtype):
            out = forward(x, *args, **kwargs)
        return out.float()

    module.forward = forward_in_precision
    return module


def with_label(features: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[features, onehot(y)]`` along the last dimension, their batch shapes broadcast.

    ``y`` holds class indices. Under Pyro's parallel enumeration it is ``arange(C)`` shaped
    ``(C, 1, ..., 1)``, and the result then holds every class's copy of the features:
    ``features`` of shape ``(N, H)`` and such a ``y`` give ``(C, ..., N, H + C)``.
    """
    onehot = torch.nn.functional.one_hot(y.long(), num_classes).to(features.dtype)
    batch = torch.broadcast_shapes(features.shape[:-1], onehot.shape[:-1])
    return torch.cat(
        [features.expand(*batch, features.shape[-1]), onehot.expand(*batch, num_classes)], -1
    )


def linear_with_label(
    layer: torch.nn.Linear, features: torch.Tensor, y: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """``layer(with_label(features, y, num_classes))``, without building the joined input.

    The layer's weight splits as ``[W_h, W_y]``, so ``W [h; onehot(y)] + b = (W_h h + b) +
    W_y[:, y]``: the features go through ``W_h`` once, not once per class, and the label
    adds a column of ``W_y``. Under parallel enumeration (``y`` of shape ``(C, 1, ..., 1)``)
    that is C times fewer products; the parameters are the same ``layer``'s.
    """
    width = features.shape[-1]
    if layer.in_features != width + num_classes:
        raise ValueError(
            f"linear_with_label: the layer reads {layer.in_features} inputs, not "
            f"{width} features + {num_classes} classes"
        )
    label_columns = layer.weight[:, width:].t()  # (num_classes, out): row c is W_y[:, c]
    return (
        torch.nn.functional.linear(features, layer.weight[:, :width], layer.bias)
        + label_columns[y.long()]
    )
