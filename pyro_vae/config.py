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

from pyro_vae import nn as networks
from pyro_vae import optimizers
from pyro_vae.errors import UserInputError
from pyro_vae.nn import ACTIVATIONS, AUTOCAST_DTYPES, SCALE_LINKS
from pyro_vae.schedules import SCHEDULES

BINARIZE_MODES = ("dynamic", "static", "threshold", "none")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("jit", "eager")  # pyro_vae.compiled
PRECISIONS = tuple(AUTOCAST_DTYPES)
PSEUDO_INPUTS = (
    "free",
    "hardtanh",
)  # the vamp prior's pseudo-inputs: pyro_vae.models.priors.VampPrior
GUIDE_SCALES = tuple(SCALE_LINKS)  # diag-normal's σ
WEIGHT_INITS = tuple(networks.WEIGHT_INITS)
OPTIMIZERS = tuple(optimizers.OPTIMIZERS)
OUTPUT_BIASES = ("torch", "data-logit")  # the mlp decoders' output bias, at the start
LR_SCHEDULES = SCHEDULES
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
    "plugins",  # which modules register the parts, not what the parts compute
)


def option(default: Any, help: str, choices: str | tuple[str, ...] | None = None) -> Any:
    """A field of :class:`TrainConfig` with its help text, which ``pyro-vae train --help``
    and the docs' flag table read from here. ``{choices}`` in the text stands for the valid
    values: those of ``choices``, a tuple, or a kind of part (``"model"``, ``"dataset"``)
    whose names are looked up when the text is shown, so a registered part appears among
    them. A list default is copied for each config."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    # data
    dataset: str = option(
        "digits",
        "data set ({choices}), or the path of an .npz file of your own images (arrays "
        "train and test, (N, H, W) or channels-first (N, C, H, W), uint8 or floats in [0, 1]; "
        "optionally valid and *_labels); digits ships with scikit-learn",
        choices="dataset",
    )
    data_dir: str | None = option(
        None,
        "folder holding MNIST/raw/ (or FashionMNIST/raw/, KMNIST/raw/); default "
        "$PYRO_VAE_DATA_DIR or ~/.cache/pyro-vae/data",
    )
    download: bool = option(
        True,
        "read the data set only from --data-dir and fail if it is missing (without it: a "
        "missing data set is downloaded there, where there is a network)",
    )
    binarize: str | None = option(
        None,
        "binarization ({choices}); default: the likelihood's (dynamic for bernoulli)",
        choices=BINARIZE_MODES,
    )
    valid_size: int | None = option(
        None,
        "training images held out for validation, the last ones (default: the data set's: "
        "10000 for MNIST-like sets, 5000 for cifar10, 180 for digits, 10% of an .npz's train "
        "array); 0: train on all, with no validation ELBO (early stopping refused)",
    )
    # generative model p(z) p(x|z) and guide q(z|x), each part chosen by registry name
    # "hvae": p(z2) p(z1|z2) p(x|z1), guide q(z1|x) q(z2|z1); "hvae-skip": p(z2) p(z1|z2)
    # p(x|z1,z2), guide q(z2|x) q(z1|x,z2); m2, cvae
    model: str = option(
        "vae",
        "model ({choices}); hvae and hvae-skip have two stochastic layers (hvae-skip: the "
        "VampPrior paper's, decoding from both, inferring z2 first); m2 is Kingma et al. "
        "2014's semi-supervised model (label summed out by enumeration), cvae the class-"
        "conditional VAE p(x|y)",
        choices="model",
    )
    prior: str = option(
        "standard-normal",
        "prior p(z) ({choices}); the top layer's under hvae",
        choices="prior",
    )
    decoder: str = option(
        "mlp",
        "decoder network ({choices})",
        choices="decoder",
    )
    likelihood: str = option(
        "bernoulli",
        "likelihood p(x|z) ({choices})",
        choices="likelihood",
    )
    encoder: str = option(
        "mlp",
        "encoder network ({choices})",
        choices="encoder",
    )
    guide: str = option(
        "diag-normal",
        "variational family q(z|x) ({choices})",
        choices="guide",
    )
    latent_dim: int = option(
        20,
        "dimension of z (of the bottom layer z1 under hvae, hvae-skip)",
    )
    top_latent_dim: int = option(
        10,
        "hvae, hvae-skip: dimension of the top layer z2",
    )
    top_guide: str | None = option(
        None,
        "hvae, hvae-skip: family of the top layer's guide (default: --guide)",
    )
    hidden_dims: list[int] = option(
        [400],
        "hidden layer widths, encoder side first (the decoder mirrors them)",
    )
    activation: str = option(
        "softplus",
        "activation between layers ({choices})",
        choices=tuple(ACTIVATIONS),
    )
    conv_channels: list[int] = option(
        [32, 64],
        "channels of the conv encoder's stages (the conv decoder mirrors them)",
    )
    likelihood_scale: float = option(
        0.1,
        "σ of the gaussian likelihood (initial σ of gaussian-learned), b of laplace",
    )
    prior_components: int = option(
        10,
        "components of the mog prior; pseudo-inputs of the vamp prior",
    )
    pseudo_inputs: str = option(
        "free",
        "vamp prior ({choices}): free pseudo-inputs start as grey noise and may leave the "
        "pixel range; hardtanh ones are clamp(w, 0, 1) of weights that start at 0.05 ± 0.01, "
        "as in the VampPrior authors' code",
        choices=PSEUDO_INPUTS,
    )
    prior_flow_depth: int = option(
        2,
        "number of affine autoregressive flows of the flow prior",
    )
    # the class-conditional models (pyro_vae.models.conditional)
    labels: int | None = option(
        None,
        "m2: training images that keep their label, balanced over the classes and chosen by "
        "--seed (recorded in RUN_DIR/labelled.json); the rest train unlabelled",
    )
    classifier_weight: float | None = option(
        None,
        "m2: weight α of the classification term α·log q(y|x) on labelled images (default: "
        "Kingma et al.'s 0.1·N/labels, N the training images)",
    )
    labelled_weighting: str | None = option(
        None,
        "m2 ({choices}): how a step weighs its labelled batch against its unlabelled one; "
        "batch (default): image for image, so the labelled images, drawn every step, weigh "
        "far more than their share (most reimplementations); data: each labelled image as "
        "much as an unlabelled one over an epoch, Kingma et al.'s objective over the training"
        " set (their code)",
        choices=LABELLED_WEIGHTINGS,
    )
    # options of particular guide families
    guide_scale: str = option(
        "softplus",
        "σ of the diag-normal guide ({choices}): softplus(a) + 1e-6; exp(½ hardtanh(a, -6, "
        "2)), log σ² bounded to [-6, 2] as in the VampPrior authors' code; or exp(a), as in "
        "Burda et al.'s IWAE code",
        choices=GUIDE_SCALES,
    )
    guide_rank: int = option(
        4,
        "rank of the covariance factor of the lowrank-normal guide",
    )
    flow_depth: int = option(
        4,
        "number of flows of the iaf, planar, radial and spline guides",
    )
    flow_hidden_dims: list[int] = option(
        [64],
        "hidden widths of each flow's conditioning network",
    )
    mixture_components: int = option(
        4,
        "components of the mixture guide",
    )
    # objective and optimizer
    elbo: str = option(
        "trace",
        "objective ({choices}); meanfield uses the analytic KL where one exists, iwae the "
        "importance-weighted bound with K = --num-particles, iwae-dreg the same with doubly "
        "reparameterized guide gradients, stl the ELBO with sticking-the-landing guide "
        "gradients",
        choices="elbo",
    )
    num_particles: int = option(
        1,
        "particles per data point (vectorized); K of the iwae bound",
    )
    beta: float = option(
        1.0,
        "weight β of the KL term (β-VAE); validation and test ELBOs stay β = 1",
    )
    kl_warmup_epochs: int = option(
        0,
        "KL warm-up: β rises linearly from β/N to β over N epochs (0: none)",
    )
    weight_init: str = option(
        "torch",
        "first weights of every linear and conv layer ({choices}): torch's defaults; he-"
        "normal, N(0, 2/fan_in) with torch's biases (the VampPrior authors' code); glorot-"
        "uniform, U(±√(6/(fan_in + fan_out))) with zero biases (Burda et al.'s IWAE code)",
        choices=WEIGHT_INITS,
    )
    output_bias: str = option(
        "torch",
        "the decoder's output bias at the start ({choices}): torch's, or data-logit, the "
        "logit of each pixel's mean over the training images (Burda et al.'s IWAE code; mlp "
        "and gated-mlp decoders, bernoulli likelihood)",
        choices=OUTPUT_BIASES,
    )
    optimizer: str = option(
        "adam",
        "the update ({choices}); adam-normgrad divides each parameter tensor's gradient by "
        "its L2 norm before Adam, as the VampPrior authors' AdamNormGrad does",
        choices=OPTIMIZERS,
    )
    lr: float = option(
        1e-3,
        "Adam learning rate (the initial one under --lr-schedule)",
    )
    adam_eps: float = option(
        1e-8,
        "Adam's ε, added to the root of the second moment (torch's default 1e-8; Burda et "
        "al.'s IWAE code uses 1e-4)",
    )
    adam_beta1: float = option(
        0.9,
        "Adam's β1, the decay of the gradient's running mean (torch's default 0.9; Burda et "
        "al.'s IWAE code uses 0.99)",
    )
    lr_schedule: str = option(
        "constant",
        "learning rate per epoch ({choices}); exponential: × --lr-decay every epoch; burda: "
        "Burda et al. 2015's 3^i epochs at lr·10^(-i/7), i = 0..7; plateau: × --lr-decay "
        "after --lr-patience epochs without a better validation ELBO",
        choices=LR_SCHEDULES,
    )
    lr_decay: float = option(
        0.95,
        "factor of the exponential and plateau schedules",
    )
    lr_patience: int = option(
        10,
        "plateau schedule: epochs without a better validation ELBO before a cut",
    )
    early_stopping: int = option(
        0,
        "stop after this many epochs without a better validation ELBO, keeping the best "
        "parameters in best.pt (0: off)",
    )
    compile: str = option(
        "jit",
        "training loss ({choices}); jit replays Pyro's JIT-traced ELBO after checking it "
        "against the eager one, and falls back to eager, saying why",
        choices=COMPILE_MODES,
    )
    precision: str = option(
        "fp32",
        "network arithmetic ({choices}); bf16 runs encoder and decoder under autocast, log-"
        "probabilities stay fp32",
        choices=PRECISIONS,
    )
    clip_norm: float | None = option(
        None,
        "clip the gradient's global norm to this value (default: no clipping)",
    )
    epochs: int = option(
        100,
        "passes over the training set (0 writes an untrained run)",
    )
    batch_size: int = option(
        128,
        "training minibatch size (under torchrun: the global batch, shared out)",
    )
    eval_batch_size: int = option(
        1000,
        "batch size for validation and test evaluation",
    )
    seed: int = option(
        0,
        "random seed (parameters, minibatch order, dynamic binarization)",
    )
    device: str = option(
        "auto",
        "device ({choices}); auto picks cuda when a GPU is visible",
        choices=DEVICES,
    )
    # robustness: when to checkpoint, how many non-finite steps to skip before stopping
    checkpoint_every: int = option(
        1,
        "write a checkpoint every N epochs (and always at the end)",
    )
    checkpoint_minutes: float | None = option(
        10.0,
        "also write one mid-epoch after this many minutes",
    )
    skip_nonfinite: int = option(
        0,
        "skip up to N steps with a NaN/inf loss or gradient before stopping",
    )
    tensorboard: bool = option(
        True,
        "write no TensorBoard logs (without it: RUN_DIR/tensorboard/ holds them where the "
        "tensorboard package is installed, pip install 'pyro-vae[tensorboard]')",
    )
    plugins: list[str] = option(
        [],
        "modules imported before the run is built, whose register() calls add parts by "
        "name (pyro_vae.plugins); recorded, so that evaluate, sample, viz and --resume "
        "import them again; the flag is --import MODULE",
    )

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
    "list[str]": "a list of strings",
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
        "list[str]": lambda v: isinstance(v, list) and all(isinstance(h, str) for h in v),
    }
    return any(kinds[kind](value) for kind in annotation.split(" | "))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The fields in a JSON or TOML file (``.toml``; a run's own config.json works as it is),
    to go through :meth:`TrainConfig.from_dict`."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        raise UserInputError(f"config file {path} is YAML; use JSON or TOML (.toml)")
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
    if config.seed >= 2**63:  # torch's generators take a signed 64-bit seed
        raise UserInputError(f"seed must be below 2**63, got {config.seed}")
    plugins = config.plugins
    if not isinstance(plugins, list) or not all(isinstance(m, str) and m for m in plugins):
        raise UserInputError(f"plugins must be a list of module names, got {plugins!r}")
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
