"""Training configuration as plain data.

One flat dataclass: every field is a JSON scalar or list, so a run folder's ``config.json``
round-trips exactly and the CLI maps one flag to one field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyro_vae.errors import UserInputError

BINARIZE_MODES = ("dynamic", "static", "threshold", "none")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("jit", "eager")  # pyro_vae.compiled
PRECISIONS = ("fp32", "bf16")  # their dtypes: pyro_vae.nn.AUTOCAST_DTYPES
PSEUDO_INPUTS = (
    "free",
    "hardtanh",
)  # the vamp prior's pseudo-inputs: pyro_vae.models.priors.VampPrior
GUIDE_SCALES = ("softplus", "bounded-logvar", "exp")  # diag-normal's σ: pyro_vae.nn.SCALE_LINKS
WEIGHT_INITS = ("torch", "he-normal", "glorot-uniform")  # pyro_vae.nn.WEIGHT_INITS
OPTIMIZERS = ("adam", "adam-normgrad")  # pyro_vae.svi.OPTIMIZERS
OUTPUT_BIASES = ("torch", "data-logit")  # the mlp decoders' output bias, at the start
LR_SCHEDULES = ("constant", "exponential", "burda", "plateau")  # pyro_vae.schedules
LABELLED_WEIGHTINGS = ("batch", "data")  # m2: pyro_vae.semisupervised.labelled_scale
# Models with two stochastic layers z1 (latent_dim) and z2 (top_latent_dim, the prior's):
# Burda et al.'s chain (pyro_vae.models.hvae) and the VampPrior paper's (pyro_vae.models.hvae_skip)
TWO_LAYER_MODELS = ("hvae", "hvae-skip")
# config.model and config.dataset of a run trained from a user's own pair and tensor of
# images (pyro_vae.pairs.train_pair): no registry entry builds it
USER_PAIR = "user-pair"
USER_TENSOR = "tensor"
# Fields a resumed run may change: none of them alters the parameters it computes (a JIT
# run's are bit-identical to an eager run's, tests/test_compiled.py).
RESUMABLE_CHANGES = (
    "epochs",
    "compile",
    "device",
    "data_dir",
    "download",
    "checkpoint_every",
    "checkpoint_minutes",
    "skip_nonfinite",
    "early_stopping",  # when to stop, not what a step computes
    "tensorboard",
)


@dataclass
class TrainConfig:
    # data
    dataset: str = "digits"
    data_dir: str | None = None  # None: $PYRO_VAE_DATA_DIR, else ~/.cache/pyro-vae/data
    download: bool = True
    binarize: str | None = None  # None: the likelihood's default ("dynamic" for bernoulli)
    valid_size: int | None = None  # training images that validate (None: the data set's; 0: none)
    # generative model p(z) p(x|z) and guide q(z|x), each part chosen by registry name
    # "hvae": p(z2) p(z1|z2) p(x|z1), guide q(z1|x) q(z2|z1); "hvae-skip": p(z2) p(z1|z2)
    # p(x|z1,z2), guide q(z2|x) q(z1|x,z2); m2, cvae
    model: str = "vae"
    prior: str = "standard-normal"
    decoder: str = "mlp"
    likelihood: str = "bernoulli"
    encoder: str = "mlp"
    guide: str = "diag-normal"
    latent_dim: int = 20
    top_latent_dim: int = 10  # two-layer models: size of z2 (latent_dim is z1's)
    top_guide: str | None = None  # two-layer models: z2's family (None: same as guide)
    hidden_dims: list[int] = field(default_factory=lambda: [400])
    activation: str = "softplus"
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])  # conv encoder/decoder
    likelihood_scale: float = 0.1  # σ of gaussian (initial σ of gaussian-learned), b of laplace
    prior_components: int = 10  # mog components, vamp pseudo-inputs
    pseudo_inputs: str = "free"  # vamp: unconstrained, or hardtanh into [0, 1] (authors' code)
    prior_flow_depth: int = 2  # flow prior
    # the class-conditional models (pyro_vae.models.conditional)
    labels: int | None = None  # m2: labelled training images, balanced over classes, by seed
    classifier_weight: float | None = None  # m2: α of α·log q(y|x); None: 0.1·N/labels
    labelled_weighting: str | None = None  # m2: batch (None) or data; LABELLED_WEIGHTINGS
    # options of particular guide families
    guide_scale: str = "softplus"  # diag-normal: softplus(a), exp(½ hardtanh(a, -6, 2)), exp(a)
    guide_rank: int = 4  # lowrank-normal
    flow_depth: int = 4  # iaf, planar, radial, spline
    flow_hidden_dims: list[int] = field(default_factory=lambda: [64])
    mixture_components: int = 4  # mixture
    # objective and optimizer
    elbo: str = "trace"
    num_particles: int = 1
    beta: float = 1.0  # weight of the KL term (β-VAE); its final value under warm-up
    kl_warmup_epochs: int = 0  # β rises linearly to ``beta`` over this many epochs (0: no rise)
    weight_init: str = "torch"  # torch's own, he-normal (VampPrior code), glorot-uniform (IWAE)
    output_bias: str = "torch"  # data-logit: decoder's output bias = logit of pixel means
    optimizer: str = "adam"  # or adam-normgrad: each tensor's gradient / its L2 norm first
    lr: float = 1e-3
    adam_eps: float = 1e-8  # Adam's ε (torch's default); Burda et al.'s code: 1e-4
    adam_beta1: float = 0.9  # Adam's β1 (torch's default); Burda et al.'s code: 0.99
    lr_schedule: str = "constant"  # per epoch: exponential, burda (stepped), plateau
    lr_decay: float = 0.95  # γ of exponential; the factor of plateau
    lr_patience: int = 10  # plateau: epochs without a better validation ELBO before a cut
    early_stopping: int = 0  # stop after this many epochs without a better validation ELBO
    compile: str = "jit"  # Pyro's JIT-traced ELBO (checked against the eager one), or "eager"
    precision: str = "fp32"  # "bf16": encoder/decoder matmuls under autocast, log-probs fp32
    clip_norm: float | None = None
    epochs: int = 100
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    device: str = "auto"
    # robustness: when to checkpoint, how many non-finite steps to skip before stopping
    checkpoint_every: int = 1  # epochs
    checkpoint_minutes: float | None = 10.0  # also mid-epoch, after this many minutes
    skip_nonfinite: int = 0
    tensorboard: bool = True  # RUN_DIR/tensorboard/ where the tensorboard package is installed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config of ``values`` (a subset of the fields; the rest keep their defaults),
        refusing unknown fields and values of the wrong JSON type, by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserInputError(
                f"unknown config field(s) {', '.join(unknown)}; "
                f"valid fields: {', '.join(sorted(known))}"
            )
        for f in dataclasses.fields(cls):
            if f.name in values and not _fits(values[f.name], str(f.type)):
                kinds = " or ".join(_KIND_NAMES[kind] for kind in str(f.type).split(" | "))
                raise UserInputError(
                    f"config field {f.name} must be {kinds}, got {values[f.name]!r}"
                )
        return cls(**values)


_KIND_NAMES = {
    "None": "null",
    "bool": "true or false",
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "list[int]": "a list of integers",
}


def _fits(value: Any, annotation: str) -> bool:
    """Whether ``value`` is of the field type ``annotation`` ("int", "float | None", ...)."""
    kinds = {
        "None": lambda v: v is None,
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "list[int]": lambda v: isinstance(v, list) and all(kinds["int"](h) for h in v),
    }
    return any(kinds[kind](value) for kind in annotation.split(" | "))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The fields in a JSON or TOML file (``.toml``; a run's own config.json works as it is),
    to go through :meth:`TrainConfig.from_dict`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise UserInputError(f"cannot read config file {path} ({error.strerror})") from None
    try:
        if path.suffix == ".toml":
            import tomllib  # Python 3.11+

            values = tomllib.loads(text)
        else:
            values = json.loads(text)
    except ImportError:
        raise UserInputError("TOML config files need Python 3.11+; write it as JSON") from None
    except ValueError as error:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise UserInputError(f"config file {path} does not parse ({error})") from None
    if not isinstance(values, dict):
        raise UserInputError(f"config file {path} must hold an object of config fields")
    return values


def differing_fields(old: TrainConfig, new: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """``field: old -> new`` for every field outside ``ignore`` whose value differs."""
    return [
        f"{f.name}: {getattr(old, f.name)!r} -> {getattr(new, f.name)!r}"
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ignore and getattr(old, f.name) != getattr(new, f.name)
    ]


def validate(config: TrainConfig) -> None:
    """Raise UserInputError for the first field that cannot work (names: registry.check_names)."""
    _validate_numbers(config)
    _validate_class_conditional(config)
    _validate_choices(config)
    _validate_combinations(config)


def _validate_numbers(config: TrainConfig) -> None:
    """Counts, sizes and rates: each in its range."""
    positive_ints = (
        "latent_dim",
        "num_particles",
        "batch_size",
        "eval_batch_size",
        "checkpoint_every",
        "guide_rank",
        "flow_depth",
        "mixture_components",
        "prior_components",
        "prior_flow_depth",
        "top_latent_dim",
    )
    for name in positive_ints:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"{name} must be an integer >= 1, got {value!r}")
    non_negative_ints = (
        "epochs",
        "seed",
        "skip_nonfinite",
        "kl_warmup_epochs",
        "early_stopping",
        "lr_patience",
    )
    for name in non_negative_ints:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserInputError(f"{name} must be an integer >= 0, got {value!r}")
    for name in ("hidden_dims", "flow_hidden_dims", "conv_channels"):
        value = getattr(config, name)
        if (
            not isinstance(value, list)
            or not value
            or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in value)
        ):
            raise UserInputError(f"{name} must be a non-empty list of integers >= 1, got {value!r}")
    for name in ("lr", "beta", "adam_eps", "likelihood_scale"):
        value = getattr(config, name)
        if isinstance(value, bool) or not (
            isinstance(value, (int, float)) and math.isfinite(value) and value > 0
        ):
            raise UserInputError(f"{name} must be a finite number > 0, got {value!r}")
    for name, above, bound in (
        ("clip_norm", operator.gt, "> 0"),
        ("checkpoint_minutes", operator.ge, ">= 0"),
    ):
        value = getattr(config, name)
        if value is not None and not (
            isinstance(value, (int, float)) and math.isfinite(value) and above(value, 0)
        ):
            raise UserInputError(f"{name} must be a finite number {bound} or None, got {value!r}")
    valid = config.valid_size
    if valid is not None and (isinstance(valid, bool) or not isinstance(valid, int) or valid < 0):
        raise UserInputError(f"valid_size must be an integer >= 0 or None, got {valid!r}")
    decay = config.lr_decay
    if not (isinstance(decay, (int, float)) and 0 < decay < 1):
        raise UserInputError(f"lr_decay must be a number in (0, 1), got {decay!r}")
    beta1 = config.adam_beta1
    if isinstance(beta1, bool) or not (isinstance(beta1, (int, float)) and 0 <= beta1 < 1):
        raise UserInputError(f"adam_beta1 must be a number in [0, 1), got {beta1!r}")


def _validate_choices(config: TrainConfig) -> None:
    """Fields that name one of a few modes."""
    if config.binarize is not None and config.binarize not in BINARIZE_MODES:
        raise UserInputError(
            f"unknown binarize mode {config.binarize!r}; valid modes: {', '.join(BINARIZE_MODES)}"
        )
    for name, valid in (
        ("compile", COMPILE_MODES),
        ("precision", PRECISIONS),
        ("lr_schedule", LR_SCHEDULES),
        ("pseudo_inputs", PSEUDO_INPUTS),
        ("guide_scale", GUIDE_SCALES),
        ("weight_init", WEIGHT_INITS),
        ("optimizer", OPTIMIZERS),
        ("output_bias", OUTPUT_BIASES),
    ):
        _check_choice(name, getattr(config, name), valid)
    if config.device not in DEVICES:
        raise UserInputError(
            f"unknown device {config.device!r}; valid devices: {', '.join(DEVICES)}"
        )


def _validate_combinations(config: TrainConfig) -> None:
    """Options that mean something only beside another: refused, saying which, without it."""
    if config.valid_size == 0:
        for name, asks in (
            ("early_stopping", config.early_stopping > 0),
            ("lr_schedule", config.lr_schedule == "plateau"),
        ):
            if asks:
                raise UserInputError(
                    f"{name}: {getattr(config, name)!r} chooses by the validation ELBO, and "
                    "valid_size 0 leaves no validation images; give --valid-size N > 0 or "
                    f"drop --{name.replace('_', '-')}"
                )
    if config.pseudo_inputs != "free" and config.prior != "vamp":
        raise UserInputError(
            f"--pseudo-inputs {config.pseudo_inputs} shapes the vamp prior's pseudo-inputs, "
            f"and --prior {config.prior} has none; give --prior vamp or drop --pseudo-inputs"
        )
    # The guide families built: a two-layer model's top layer has its own (default: --guide's).
    families = {config.guide}
    if config.model in TWO_LAYER_MODELS:
        families.add(config.top_guide or config.guide)
    if config.guide_scale != "softplus" and families != {"diag-normal"}:
        raise UserInputError(
            f"--guide-scale {config.guide_scale} shapes the diag-normal guide's σ, and the "
            f"guide here is {' + '.join(sorted(families))}; give --guide diag-normal (and "
            "--top-guide diag-normal) or drop --guide-scale"
        )
    _validate_output_bias(config)


def _validate_output_bias(config: TrainConfig) -> None:
    """data-logit sets one logit per pixel: the mlp decoders' output under a Bernoulli."""
    if config.output_bias == "torch":
        return
    if config.decoder not in ("mlp", "gated-mlp") or config.likelihood != "bernoulli":
        raise UserInputError(
            f"--output-bias {config.output_bias} starts the decoder's output at the logit of "
            "each pixel's mean, which needs an mlp or gated-mlp decoder and the bernoulli "
            f"likelihood, not --decoder {config.decoder} with --likelihood "
            f"{config.likelihood}; change those or drop --output-bias"
        )


def _check_choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    """Refuse a field whose value is not one of ``valid``, naming them."""
    if value not in valid:
        raise UserInputError(f"unknown {name} {value!r}; valid values: {', '.join(valid)}")


def _validate_class_conditional(config: TrainConfig) -> None:
    """The fields of m2 and cvae (pyro_vae.models.conditional): given where they mean something."""
    if config.model != "m2":
        for name in ("labels", "classifier_weight", "labelled_weighting"):
            if getattr(config, name) is not None:
                raise UserInputError(
                    f"--{name.replace('_', '-')} is for --model m2 (semi-supervised), "
                    f"not --model {config.model}"
                )
    if config.model not in ("m2", "cvae"):
        return
    if config.model == "m2":
        labels = config.labels
        if labels is None:
            raise UserInputError(
                "--model m2 needs --labels N: how many training images keep their label "
                "(balanced over the classes; the rest train unlabelled)"
            )
        if isinstance(labels, bool) or not isinstance(labels, int) or labels < 1:
            raise UserInputError(f"labels must be an integer >= 1, got {labels!r}")
        weight = config.classifier_weight
        if weight is not None and not (
            isinstance(weight, (int, float))
            and not isinstance(weight, bool)
            and math.isfinite(weight)
            and weight >= 0
        ):
            raise UserInputError(f"classifier_weight must be a finite number >= 0, got {weight!r}")
        if config.labelled_weighting is not None:
            _check_choice("labelled_weighting", config.labelled_weighting, LABELLED_WEIGHTINGS)
    allowed = ("trace",) if config.model == "m2" else ("trace", "meanfield")
    if config.elbo not in allowed:
        objective = "TraceEnum_ELBO (--elbo trace)" if config.model == "m2" else "trace, meanfield"
        raise UserInputError(
            f"--model {config.model} trains with {objective}; --elbo {config.elbo} scores "
            "images alone and does not take their labels"
        )
    if config.top_guide is not None:
        raise UserInputError(f"--top-guide is for --model hvae, not --model {config.model}")
