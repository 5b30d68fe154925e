"""One table of every swappable part, chosen by name from the CLI and the Python API.

``REGISTRY[kind][name]`` is a factory. The factories of one kind share a signature, each
taking the run's :class:`TrainConfig` (plain data: the part reads the fields it needs):

- ``likelihood(config, image_shape)``
- ``encoder(config, image_shape)``: its ``out_features`` is the width of its output
- ``guide(config, encoder, latent_dim)``
- ``prior(config, latent_dim, posterior, image_shape)``: ``posterior(x)`` is the guide's
  q(z|x), for priors built from it (the VampPrior)
- ``decoder(config, latent_dim, param_shape)``
- ``elbo(num_particles)``: a Pyro ELBO
- ``model(config, image_shape, num_classes)``: the whole (model, guide) pair, assembled from
  the parts (``num_classes``: the labels' count, for the class-conditional models; None
  where the data set has no labels)

Add an entry with :func:`register`; :func:`build_vae` assembles a model/guide pair.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.infer
from torch import nn

from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserInputError
from pyro_vae.guides import (
    ClassConditionalGuide,
    ConvEncoder,
    DiagNormalGuide,
    FlowGuide,
    FullNormalGuide,
    HierarchicalGuide,
    ImageAndCodeEncoder,
    LabelConditionedEncoder,
    LowRankNormalGuide,
    MixtureGuide,
    MLPEncoder,
    SkipHierarchicalGuide,
    StudentTGuide,
    ZukoFlowGuide,
    ZukoFlowPrior,
)
from pyro_vae.models import (
    BernoulliLikelihood,
    ClassConditionalModel,
    ContinuousBernoulliLikelihood,
    ConvDecoder,
    DiscretizedLogisticLikelihood,
    FlowPrior,
    GaussianLikelihood,
    HierarchicalVAEModel,
    LaplaceLikelihood,
    LearnedGaussianLikelihood,
    LearnedNormalPrior,
    MixtureOfGaussiansPrior,
    MLPDecoder,
    SkipDecoder,
    SkipHierarchicalVAEModel,
    StandardNormalPrior,
    VAEModel,
    VampPrior,
    vamp_components,
)
from pyro_vae.nn import compute_in
from pyro_vae.objectives import IWAE_ELBO, STL_ELBO, DReG_IWAE_ELBO
from pyro_vae.protocols import PROTOCOLS, members, missing_member
from pyro_vae.semisupervised import no_labels_error, semi_supervised_elbo


def _flow(kind: str, family: type = FlowGuide) -> Callable:
    def make(config: TrainConfig, encoder: nn.Module, latent_dim: int) -> nn.Module:
        return family(encoder, latent_dim, kind, config.flow_depth, config.flow_hidden_dims)

    return make


def _elbo(cls: type) -> Callable[[int], pyro.infer.ELBO]:
    # vectorize_particles: K particles run as one batched trace, not K Python loops.
    def make(num_particles: int) -> pyro.infer.ELBO:
        return cls(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=1,  # the "data" plate; particles go to dim -2
        )

    return make


REGISTRY: dict[str, dict[str, Callable]] = {
    "likelihood": {
        "bernoulli": lambda config, shape: BernoulliLikelihood(),
        "continuous-bernoulli": lambda config, shape: ContinuousBernoulliLikelihood(),
        "gaussian": lambda config, shape: GaussianLikelihood(config.likelihood_scale),
        "gaussian-learned": lambda config, shape: LearnedGaussianLikelihood(
            shape, config.likelihood_scale
        ),
        "laplace": lambda config, shape: LaplaceLikelihood(config.likelihood_scale),
        "discretized-logistic": lambda config, shape: DiscretizedLogisticLikelihood(),
    },
    "encoder": {
        "mlp": lambda config, shape: MLPEncoder(shape, config.hidden_dims, config.activation),
        "conv": lambda config, shape: ConvEncoder(
            shape, config.conv_channels, config.hidden_dims[-1], config.activation
        ),
        # The VampPrior paper's networks: gated dense layers (--activation unused).
        "gated-mlp": lambda config, shape: MLPEncoder(
            shape, config.hidden_dims, config.activation, gated=True
        ),
    },
    "guide": {
        "diag-normal": lambda config, encoder, dim: DiagNormalGuide(
            encoder, dim, config.guide_scale
        ),
        "lowrank-normal": lambda config, encoder, dim: LowRankNormalGuide(
            encoder, dim, config.guide_rank
        ),
        "full-normal": lambda config, encoder, dim: FullNormalGuide(encoder, dim),
        "iaf": _flow("iaf"),
        "planar": _flow("planar"),
        "radial": _flow("radial"),
        "spline": _flow("spline"),
        "zuko-nsf": _flow("zuko-nsf", ZukoFlowGuide),  # optional extra: pip install zuko
        "zuko-naf": _flow("zuko-naf", ZukoFlowGuide),
        "mixture": lambda config, encoder, dim: MixtureGuide(
            encoder, dim, config.mixture_components
        ),
        "student-t": lambda config, encoder, dim: StudentTGuide(encoder, dim),
    },
    "prior": {
        "standard-normal": lambda config, dim, posterior, shape: StandardNormalPrior(dim),
        "learned-normal": lambda config, dim, posterior, shape: LearnedNormalPrior(dim),
        "mog": lambda config, dim, posterior, shape: MixtureOfGaussiansPrior(
            dim, config.prior_components
        ),
        "vamp": lambda config, dim, posterior, shape: VampPrior(
            dim, posterior, shape, config.prior_components, config.pseudo_inputs
        ),
        "flow": lambda config, dim, posterior, shape: FlowPrior(
            dim, config.prior_flow_depth, config.flow_hidden_dims
        ),
        "zuko-nsf": lambda config, dim, posterior, shape: ZukoFlowPrior(
            dim, config.prior_flow_depth, config.flow_hidden_dims
        ),
    },
    "decoder": {
        "mlp": lambda config, dim, param_shape: MLPDecoder(
            dim, param_shape, config.hidden_dims, config.activation
        ),
        "conv": lambda config, dim, param_shape: ConvDecoder(
            dim, param_shape, config.conv_channels, config.hidden_dims[-1], config.activation
        ),
        "gated-mlp": lambda config, dim, param_shape: MLPDecoder(
            dim, param_shape, config.hidden_dims, config.activation, gated=True
        ),
    },
    "elbo": {
        "trace": _elbo(pyro.infer.Trace_ELBO),
        # Analytic KL(q || p) where Pyro knows one (Normal guide, Normal prior).
        "meanfield": _elbo(pyro.infer.TraceMeanField_ELBO),
        # Importance-weighted bound per data point, K = num_particles.
        "iwae": IWAE_ELBO,
        "iwae-dreg": DReG_IWAE_ELBO,
        "stl": STL_ELBO,
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
    """Add (or replace) factory ``name`` of ``kind``; the module docstring gives signatures.

    Each part the factory builds is checked against its kind's protocol
    (``pyro_vae.protocols``): one that lacks a member is refused, naming it."""
    if kind not in REGISTRY:
        raise UserInputError(f"unknown registry kind {kind!r}; valid kinds: {', '.join(REGISTRY)}")
    if kind not in PROTOCOLS:
        REGISTRY[kind][name] = factory
        return

    def checked(*args, **kwargs):
        part = factory(*args, **kwargs)
        missing = missing_member(kind, part)
        if missing is not None:
            protocol = PROTOCOLS[kind]
            wanted = ", ".join(members(protocol))
            raise UserInputError(
                f"the {kind} {name!r} ({type(part).__name__}) has no {missing!r}; every {kind} "
                f"provides {wanted} (pyro_vae.protocols.{protocol.__name__})"
            )
        return part

    checked.__wrapped__ = factory
    REGISTRY[kind][name] = checked


def check_names(config: TrainConfig) -> None:
    """Fail early, before any data is loaded, on a name no table holds."""
    for kind in ("model", "prior", "likelihood", "decoder", "encoder", "guide", "elbo"):
        lookup(kind, getattr(config, kind))
    if config.top_guide is not None:
        lookup("guide", config.top_guide)


def _network(config: TrainConfig, kind: str, *shapes) -> nn.Module:
    """The encoder or decoder that ``config`` names, computing in ``config.precision``."""
    return compute_in(lookup(kind, getattr(config, kind))(config, *shapes), config.precision)


def _guide(config: TrainConfig, name: str, encoder: nn.Module, latent_dim: int) -> nn.Module:
    return lookup("guide", name)(config, encoder, latent_dim)


def _prior(config: TrainConfig, latent_dim: int, guide: nn.Module, image_shape) -> nn.Module:
    posterior = vamp_components(guide) if config.prior == "vamp" else guide.posterior
    return lookup("prior", config.prior)(config, latent_dim, posterior, image_shape)


def build_single_layer(config: TrainConfig, image_shape: tuple[int, ...], num_classes: int | None):
    """p(z) p(x|z) with q(z|x): the VAE of Kingma & Welling (2014)."""
    likelihood = lookup("likelihood", config.likelihood)(config, image_shape)
    encoder = _network(config, "encoder", image_shape)
    guide = _guide(config, config.guide, encoder, config.latent_dim)
    prior = _prior(config, config.latent_dim, guide, image_shape)
    param_shape = likelihood.param_shape(image_shape)
    decoder = _network(config, "decoder", config.latent_dim, param_shape)
    return VAEModel(prior, decoder, likelihood, image_shape), guide


def build_two_layer(config: TrainConfig, image_shape: tuple[int, ...], num_classes: int | None):
    """p(z2) p(z1|z2) p(x|z1) with q(z1|x) q(z2|z1): ``latent_dim`` is z1's size,
    ``top_latent_dim`` z2's; ``top_guide`` (default: ``guide``) is the top layer's family."""
    likelihood = lookup("likelihood", config.likelihood)(config, image_shape)
    encoder = _network(config, "encoder", image_shape)
    bottom = _guide(config, config.guide, encoder, config.latent_dim)
    top_encoder = compute_in(
        MLPEncoder((config.latent_dim,), config.hidden_dims, config.activation), config.precision
    )
    top = _guide(config, config.top_guide or config.guide, top_encoder, config.top_latent_dim)
    guide = HierarchicalGuide(bottom, top)
    prior = _prior(config, config.top_latent_dim, guide, image_shape)
    param_shape = likelihood.param_shape(image_shape)
    decoder = _network(config, "decoder", config.latent_dim, param_shape)
    model = HierarchicalVAEModel(
        prior,
        decoder,
        likelihood,
        image_shape,
        config.latent_dim,
        config.hidden_dims,
        config.activation,
    )
    return model, guide


def build_two_layer_skip(
    config: TrainConfig, image_shape: tuple[int, ...], num_classes: int | None
):
    """The VampPrior paper's two-level VAE: p(z2) p(z1|z2) p(x|z1,z2) with q(z2|x) q(z1|x,z2)
    (``pyro_vae.models.hvae_skip``). ``latent_dim`` is z1's size, ``top_latent_dim`` z2's; ``guide``
    is z1's family and ``top_guide`` (default: ``guide``) z2's. Its networks are MLPs, gated
    where ``encoder``/``decoder`` say ``gated-mlp``."""
    for kind in ("encoder", "decoder"):
        if getattr(config, kind) not in ("mlp", "gated-mlp"):
            raise UserInputError(
                f"--model hvae-skip builds MLP networks; --{kind} {getattr(config, kind)} is "
                f"not one: give --{kind} mlp or gated-mlp (or use --model hvae)"
            )
    likelihood = lookup("likelihood", config.likelihood)(config, image_shape)
    top = _guide(
        config,
        config.top_guide or config.guide,
        _network(config, "encoder", image_shape),
        config.top_latent_dim,
    )
    bottom_encoder = ImageAndCodeEncoder(
        image_shape,
        config.top_latent_dim,
        config.hidden_dims,
        config.activation,
        gated=config.encoder == "gated-mlp",
    )
    for part in (bottom_encoder.image_in, bottom_encoder.code_in, bottom_encoder.net):
        compute_in(part, config.precision)
    guide = SkipHierarchicalGuide(
        top, _guide(config, config.guide, bottom_encoder, config.latent_dim)
    )
    prior = _prior(config, config.top_latent_dim, guide, image_shape)
    gated = config.decoder == "gated-mlp"
    decoder = SkipDecoder(
        (config.latent_dim, config.top_latent_dim),
        likelihood.param_shape(image_shape),
        config.hidden_dims,
        config.activation,
        gated,
    )
    for part in (decoder.bottom_in, decoder.top_in, decoder.net):
        compute_in(part, config.precision)
    model = SkipHierarchicalVAEModel(
        prior,
        decoder,
        likelihood,
        image_shape,
        config.latent_dim,
        config.hidden_dims,
        config.activation,
        gated,
        config.guide_scale,
    )
    return model, guide


def build_class_conditional(
    config: TrainConfig, image_shape: tuple[int, ...], num_classes: int | None
):
    """m2: p(y) p(z) p(x|y,z) with q(y|x) q(z|x,y) (Kingma et al. 2014); cvae: p(z) p(x|y,z)
    with q(z|x,y). q(z|x,y) is the ``guide`` family on a label-conditioned encoder; q(y|x)
    is a classifier: the ``encoder`` network and a linear layer to the class logits."""
    if num_classes is None:
        raise no_labels_error(config.dataset)
    if config.prior == "vamp":
        raise UserInputError(
            f"--model {config.model} with --prior vamp: the VampPrior mixes q(z|u) over "
            "pseudo-inputs u, and this model's q(z|x,y) needs a label for each; choose "
            "another --prior (standard-normal, mog, flow, ...)"
        )
    likelihood = lookup("likelihood", config.likelihood)(config, image_shape)
    encoder = LabelConditionedEncoder(
        _network(config, "encoder", image_shape), num_classes, config.activation
    )
    family = _guide(config, config.guide, encoder, config.latent_dim)
    classifier = None
    if config.model == "m2":
        features = _network(config, "encoder", image_shape)
        classifier = nn.Sequential(features, nn.Linear(features.out_features, num_classes))
    guide = ClassConditionalGuide(family, classifier, num_classes)
    prior = _prior(config, config.latent_dim, guide, image_shape)
    param_shape = likelihood.param_shape(image_shape)
    decoder = _network(config, "decoder", config.latent_dim + num_classes, param_shape)
    model = ClassConditionalModel(
        prior, decoder, likelihood, image_shape, num_classes, label_prior=config.model == "m2"
    )
    return model, guide


REGISTRY["model"] = {
    "vae": build_single_layer,
    "hvae": build_two_layer,
    "hvae-skip": build_two_layer_skip,
    "m2": build_class_conditional,
    "cvae": build_class_conditional,
}


def build_vae(
    config: TrainConfig, image_shape: tuple[int, ...], num_classes: int | None = 10
) -> tuple[nn.Module, nn.Module]:
    """The (model, guide) pair that ``config`` names, for images of ``image_shape`` (and
    ``num_classes`` labels, which only the class-conditional models read)."""
    check_names(config)
    return lookup("model", config.model)(config, tuple(image_shape), num_classes)


def make_elbo(config: TrainConfig, num_train: int | None = None) -> pyro.infer.ELBO:
    """The training objective ``config`` names. m2 trains ``SemiSupervisedELBO`` (its
    ``elbo`` names the per-image bound, only ``trace``), whose weights need ``num_train``,
    the training images."""
    if config.model == "m2":
        if num_train is None:
            raise ValueError("make_elbo needs num_train, the training images, for m2")
        return semi_supervised_elbo(config, num_train)
    return lookup("elbo", config.elbo)(config.num_particles)


def objective_name(config: TrainConfig) -> str:
    """What metrics.jsonl's ``train_elbo`` is: minus the loss :func:`make_elbo` trains,
    named for what it bounds and how it is weighted (the ELBO, the IWAE bound of K
    particles, m2's objective with its classifier term; β-weighted during a KL warm-up or
    under β ≠ 1). The validation and test ELBOs are always the plain ELBO."""
    if config.model == "m2":
        name = "M2 objective (ELBO terms + α·log q(y|x))"
    elif config.elbo in ("iwae", "iwae-dreg"):
        name = f"IWAE bound (K={config.num_particles})"
    elif config.elbo in ("trace", "meanfield", "stl"):
        name = "ELBO"
    else:
        name = f"objective {config.elbo!r}"
    if config.kl_warmup_epochs:
        return f"β-weighted {name} (KL warm-up)"
    return f"β-weighted {name} (β={config.beta:g})" if config.beta != 1 else name
