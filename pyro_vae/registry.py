"""One table of every swappable part, chosen by name from the CLI and the Python API.

``REGISTRY[kind][name]`` is a factory. The factories of one kind share a signature:

- ``prior(latent_dim)``
- ``likelihood()``
- ``decoder(latent_dim, param_shape, hidden_dims, activation)``
- ``encoder(image_shape, hidden_dims, activation)``
- ``guide(encoder, latent_dim, config)``: ``config`` carries the family's options
- ``elbo(num_particles)``: a Pyro ELBO

Add an entry with :func:`register`; :func:`build_vae` assembles a model/guide pair.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.infer
from torch import nn

from guides import (
    DiagNormalGuide,
    FlowGuide,
    FullNormalGuide,
    LowRankNormalGuide,
    MixtureGuide,
    MLPEncoder,
    StudentTGuide,
)
from models import BernoulliLikelihood, MLPDecoder, StandardNormalPrior, VAEModel
from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserInputError
from pyro_vae.objectives import IWAE_ELBO


def _elbo(cls: type) -> Callable[[int], pyro.infer.ELBO]:
    # vectorize_particles: K particles run as one batched trace, not K Python loops.
    def make(num_particles: int) -> pyro.infer.ELBO:
        return cls(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=1,  # the "data" plate; particles go to dim -2
        )

    return make


def _flow(kind: str) -> Callable:
    def make(encoder: nn.Module, latent_dim: int, config: TrainConfig) -> FlowGuide:
        return FlowGuide(encoder, latent_dim, kind, config.flow_depth, config.flow_hidden_dims)

    return make


REGISTRY: dict[str, dict[str, Callable]] = {
    "prior": {"standard-normal": StandardNormalPrior},
    "likelihood": {"bernoulli": BernoulliLikelihood},
    "decoder": {"mlp": MLPDecoder},
    "encoder": {"mlp": MLPEncoder},
    "guide": {
        "diag-normal": lambda encoder, latent_dim, config: DiagNormalGuide(encoder, latent_dim),
        "lowrank-normal": lambda encoder, latent_dim, config: LowRankNormalGuide(
            encoder, latent_dim, config.guide_rank
        ),
        "full-normal": lambda encoder, latent_dim, config: FullNormalGuide(encoder, latent_dim),
        "iaf": _flow("iaf"),
        "planar": _flow("planar"),
        "radial": _flow("radial"),
        "spline": _flow("spline"),
        "mixture": lambda encoder, latent_dim, config: MixtureGuide(
            encoder, latent_dim, config.mixture_components
        ),
        "student-t": lambda encoder, latent_dim, config: StudentTGuide(encoder, latent_dim),
    },
    "elbo": {
        "trace": _elbo(pyro.infer.Trace_ELBO),
        # Analytic KL(q || p) where Pyro knows one (Normal guide, Normal prior).
        "meanfield": _elbo(pyro.infer.TraceMeanField_ELBO),
        # Importance-weighted bound per data point, K = num_particles.
        "iwae": IWAE_ELBO,
    },
}


def names(kind: str) -> list[str]:
    return list(REGISTRY[kind])


def lookup(kind: str, name: str) -> Callable:
    table = REGISTRY[kind]
    if name not in table:
        raise UserInputError(f"unknown {kind} {name!r}; valid {kind} names: {', '.join(table)}")
    return table[name]


def register(kind: str, name: str, factory: Callable) -> None:
    """Add (or replace) factory ``name`` of ``kind``; the module docstring gives signatures."""
    if kind not in REGISTRY:
        raise UserInputError(f"unknown registry kind {kind!r}; valid kinds: {', '.join(REGISTRY)}")
    REGISTRY[kind][name] = factory


def check_names(config: TrainConfig) -> None:
    """Fail early, before any data is loaded, on a name no table holds."""
    for kind in ("prior", "likelihood", "decoder", "encoder", "guide", "elbo"):
        lookup(kind, getattr(config, kind))


def build_vae(config: TrainConfig, image_shape: tuple[int, ...]) -> tuple[VAEModel, nn.Module]:
    """The (model, guide) pair that ``config`` names, for images of ``image_shape``."""
    check_names(config)
    likelihood = lookup("likelihood", config.likelihood)()
    prior = lookup("prior", config.prior)(config.latent_dim)
    decoder = lookup("decoder", config.decoder)(
        config.latent_dim,
        likelihood.param_shape(image_shape),
        config.hidden_dims,
        config.activation,
    )
    encoder = lookup("encoder", config.encoder)(image_shape, config.hidden_dims, config.activation)
    guide = lookup("guide", config.guide)(encoder, config.latent_dim, config)
    return VAEModel(prior, decoder, likelihood, image_shape), guide


def make_elbo(config: TrainConfig) -> pyro.infer.ELBO:
    return lookup("elbo", config.elbo)(config.num_particles)
