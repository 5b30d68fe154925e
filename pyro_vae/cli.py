"""The ``pyro-vae`` command: train, evaluate and sample from VAEs.

Bad input ends in one line on stderr, ``pyro-vae: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from pyro_vae.config import (
    BINARIZE_MODES,
    COMPILE_MODES,
    DEVICES,
    GUIDE_SCALES,
    LABELLED_WEIGHTINGS,
    LR_SCHEDULES,
    OPTIMIZERS,
    OUTPUT_BIASES,
    PRECISIONS,
    PSEUDO_INPUTS,
    RESUMABLE_CHANGES,
    WEIGHT_INITS,
    TrainConfig,
    read_config_file,
    validate,
)
from pyro_vae.data import DATASET_NAMES
from pyro_vae.distributed import is_main_process, speaks_for_machine
from pyro_vae.errors import UserInputError
from pyro_vae.importance import DEFAULT_MAX_ELEMENTS
from pyro_vae.nn import ACTIVATIONS
from pyro_vae.registry import check_names, names
from pyro_vae.run import CHECKPOINTS, flushed_denormals
from pyro_vae.trainer import TrainingInterrupted, resume_config

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_DEFAULTS = TrainConfig()


def _flag(field: str) -> str:
    """The flag of a config field: ``--no-NAME`` for a switch that is on by default."""
    prefix = "--no-" if getattr(_DEFAULTS, field) is True else "--"
    return prefix + field.replace("_", "-")


def _one_of(values: Sequence[str]) -> str:
    return "one of: " + ", ".join(values)


# One help string per TrainConfig field; the flag is --field-name.
TRAIN_HELP = {
    "dataset": f"data set ({_one_of(DATASET_NAMES)}); digits ships with scikit-learn",
    "data_dir": "folder holding MNIST/raw/ (or FashionMNIST/raw/, KMNIST/raw/); "
    "default $PYRO_VAE_DATA_DIR or ~/.cache/pyro-vae/data",
    "download": "read the data set only from --data-dir and fail if it is missing "
    "(without it: a missing data set is downloaded there, where there is a network)",
    "valid_size": "training images held out for validation, the last ones (default: the data "
    "set's: 10000 for MNIST-like sets, 5000 for cifar10, 180 for digits, 10%% of an .npz's "
    "train array); 0: train on all, with no validation ELBO (early stopping refused)",
    "binarize": f"binarization ({_one_of(BINARIZE_MODES)}); default: the likelihood's "
    "(dynamic for bernoulli)",
    "model": f"model ({_one_of(names('model'))}); hvae and hvae-skip have two stochastic "
    "layers (hvae-skip: the VampPrior paper's, decoding from both, inferring z2 first); m2 is "
    "Kingma et al. 2014's semi-supervised model (label summed out by enumeration), cvae the "
    "class-conditional VAE p(x|y)",
    "labels": "m2: training images that keep their label, balanced over the classes and "
    "chosen by --seed (recorded in RUN_DIR/labelled.json); the rest train unlabelled",
    "classifier_weight": "m2: weight α of the classification term α·log q(y|x) on labelled "
    "images (default: Kingma et al.'s 0.1·N/labels, N the training images)",
    "labelled_weighting": f"m2 ({_one_of(LABELLED_WEIGHTINGS)}): how a step weighs its "
    "labelled batch against its unlabelled one; batch (default): image for image, so the "
    "labelled images, drawn every step, weigh far more than their share (most "
    "reimplementations); data: each labelled image as much as an unlabelled one over an "
    "epoch, Kingma et al.'s objective over the training set (their code)",
    "prior": f"prior p(z) ({_one_of(names('prior'))}); the top layer's under hvae",
    "decoder": f"decoder network ({_one_of(names('decoder'))})",
    "likelihood": f"likelihood p(x|z) ({_one_of(names('likelihood'))})",
    "encoder": f"encoder network ({_one_of(names('encoder'))})",
    "guide": f"variational family q(z|x) ({_one_of(names('guide'))})",
    "latent_dim": "dimension of z (of the bottom layer z1 under hvae, hvae-skip)",
    "top_latent_dim": "hvae, hvae-skip: dimension of the top layer z2",
    "top_guide": "hvae, hvae-skip: family of the top layer's guide (default: --guide)",
    "hidden_dims": "hidden layer widths, encoder side first (the decoder mirrors them)",
    "activation": f"activation between layers ({_one_of(ACTIVATIONS)})",
    "conv_channels": "channels of the conv encoder's stages (the conv decoder mirrors them)",
    "likelihood_scale": "σ of the gaussian likelihood (initial σ of gaussian-learned), "
    "b of laplace",
    "prior_components": "components of the mog prior; pseudo-inputs of the vamp prior",
    "pseudo_inputs": f"vamp prior ({_one_of(PSEUDO_INPUTS)}): free pseudo-inputs start "
    "as grey noise and may leave the pixel range; hardtanh ones are clamp(w, 0, 1) of "
    "weights that start at 0.05 ± 0.01, as in the VampPrior authors' code",
    "prior_flow_depth": "number of affine autoregressive flows of the flow prior",
    "guide_scale": f"σ of the diag-normal guide ({_one_of(GUIDE_SCALES)}): softplus(a) + "
    "1e-6; exp(½ hardtanh(a, -6, 2)), log σ² bounded to [-6, 2] as in the VampPrior "
    "authors' code; or exp(a), as in Burda et al.'s IWAE code",
    "guide_rank": "rank of the covariance factor of the lowrank-normal guide",
    "flow_depth": "number of flows of the iaf, planar, radial and spline guides",
    "flow_hidden_dims": "hidden widths of each flow's conditioning network",
    "mixture_components": "components of the mixture guide",
    "beta": "weight β of the KL term (β-VAE); validation and test ELBOs stay β = 1",
    "kl_warmup_epochs": "KL warm-up: β rises linearly from β/N to β over N epochs (0: none)",
    "elbo": f"objective ({_one_of(names('elbo'))}); meanfield uses the analytic KL where "
    "one exists, iwae the importance-weighted bound with K = --num-particles, iwae-dreg "
    "the same with doubly reparameterized guide gradients, stl the ELBO with sticking-the-"
    "landing guide gradients",
    "num_particles": "particles per data point (vectorized); K of the iwae bound",
    "weight_init": f"first weights of every linear and conv layer ({_one_of(WEIGHT_INITS)}): "
    "torch's defaults; he-normal, N(0, 2/fan_in) with torch's biases (the VampPrior "
    "authors' code); glorot-uniform, U(±√(6/(fan_in + fan_out))) with zero biases (Burda "
    "et al.'s IWAE code)",
    "output_bias": f"the decoder's output bias at the start ({_one_of(OUTPUT_BIASES)}): "
    "torch's, or data-logit, the logit of each pixel's mean over the training images "
    "(Burda et al.'s IWAE code; mlp and gated-mlp decoders, bernoulli likelihood)",
    "optimizer": f"the update ({_one_of(OPTIMIZERS)}); adam-normgrad divides each "
    "parameter tensor's gradient by its L2 norm before Adam, as the VampPrior authors' "
    "AdamNormGrad does",
    "lr": "Adam learning rate (the initial one under --lr-schedule)",
    "adam_eps": "Adam's ε, added to the root of the second moment (torch's default 1e-8; "
    "Burda et al.'s IWAE code uses 1e-4)",
    "adam_beta1": "Adam's β1, the decay of the gradient's running mean (torch's default "
    "0.9; Burda et al.'s IWAE code uses 0.99)",
    "lr_schedule": f"learning rate per epoch ({_one_of(LR_SCHEDULES)}); exponential: "
    "× --lr-decay every epoch; burda: Burda et al. 2015's 3^i epochs at lr·10^(-i/7), "
    "i = 0..7; plateau: × --lr-decay after --lr-patience epochs without a better "
    "validation ELBO",
    "lr_decay": "factor of the exponential and plateau schedules",
    "lr_patience": "plateau schedule: epochs without a better validation ELBO before a cut",
    "early_stopping": "stop after this many epochs without a better validation ELBO, keeping "
    "the best parameters in best.pt (0: off)",
    "compile": f"training loss ({_one_of(COMPILE_MODES)}); jit replays Pyro's JIT-traced "
    "ELBO after checking it against the eager one, and falls back to eager, saying why",
    "precision": f"network arithmetic ({_one_of(PRECISIONS)}); bf16 runs encoder and decoder "
    "under autocast, log-probabilities stay fp32",
    "clip_norm": "clip the gradient's global norm to this value (default: no clipping)",
    "epochs": "passes over the training set (0 writes an untrained run)",
    "batch_size": "training minibatch size (under torchrun: the global batch, shared out)",
    "eval_batch_size": "batch size for validation and test evaluation",
    "seed": "random seed (parameters, minibatch order, dynamic binarization)",
    "device": f"device ({_one_of(DEVICES)}); auto picks cuda when a GPU is visible",
    "checkpoint_every": "write a checkpoint every N epochs (and always at the end)",
    "checkpoint_minutes": "also write one mid-epoch after this many minutes",
    "skip_nonfinite": "skip up to N steps with a NaN/inf loss or gradient before stopping",
    "tensorboard": "write no TensorBoard logs (without it: RUN_DIR/tensorboard/ holds them "
    "where the tensorboard package is installed, pip install 'pyro-vae[tensorboard]')",
}


_NONE_DEFAULT_TYPES = {
    "clip_norm": float,
    "checkpoint_minutes": float,
    "valid_size": int,
    "labels": int,
    "classifier_weight": float,
}


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters escaped, so it prints as one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) with exit status 2."""

    def error(self, message: str):
        message = one_line(message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field. Defaults are SUPPRESSed, so the parsed namespace holds
    only the flags the user gave: a resumed run changes just those."""
    for f in dataclasses.fields(TrainConfig):
        flag = _flag(f.name)
        default = getattr(_DEFAULTS, f.name)
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        shows_default = default is not None and default is not True  # not for a switch
        help_text = TRAIN_HELP[f.name] + (f" (default: {shown})" if shows_default else "")
        common = dict(default=argparse.SUPPRESS, dest=f.name)
        if default is True:
            parser.add_argument(flag, action="store_false", help=help_text, **common)
        elif f.name in ("hidden_dims", "flow_hidden_dims", "conv_channels"):
            parser.add_argument(flag, type=int, nargs="+", metavar="N", help=help_text, **common)
        else:
            # Fields whose default is None are strings, but for those _NONE_DEFAULT_TYPES names.
            kind = type(default) if default is not None else _NONE_DEFAULT_TYPES.get(f.name, str)
            metavar = f.name.upper()
            parser.add_argument(flag, type=kind, metavar=metavar, help=help_text, **common)


def _add_run_device(parser: argparse.ArgumentParser) -> None:
    """The options of every command that loads a run: its device and which parameters."""
    parser.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help=f"override the run's device ({_one_of(DEVICES)})",
    )
    parser.add_argument(
        "--checkpoint",
        default="best",
        choices=CHECKPOINTS,
        help="best: the parameters of the best validation ELBO where early stopping kept "
        "them (best.pt), else the last; last: the last checkpoint (default: best)",
    )


def _load_run(args: argparse.Namespace):
    """The run of ``args.run_dir``, saying once which parameters it holds."""
    from pyro_vae import load_run

    run = load_run(args.run_dir, device=args.device, checkpoint=args.checkpoint)
    if is_main_process():
        print(f"parameters: {run.parameters_from}")
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyro-vae", description="Variational autoencoders as Pyro programs.")
    parser.add_argument("--version", action="version", version=f"pyro-vae {version('pyro-vae')}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _add_train_command(commands)
    _add_evaluate_command(commands)
    _add_sample_command(commands)
    _add_viz_command(commands)
    _add_compare_command(commands)
    return parser


def _add_train_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-vae train``: the config's flags, and where the run goes."""
    train = commands.add_parser(
        "train",
        help="train a VAE and write a run folder",
        description="Train a VAE by SVI and write a run folder.",
    )
    _add_train_flags(train)
    train.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="a JSON or TOML (.toml) file of config fields, as in a run's config.json; "
        "flags given beside it override its values",
    )
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="run folder to create (default: runs/<dataset>-<timestamp>)",
    )
    train.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its checkpoint; of the flags above only "
        + ", ".join(_flag(name) for name in RESUMABLE_CHANGES)
        + " may change",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-vae evaluate``: the ELBO and log p̂(x) of a run's split."""
    evaluate = commands.add_parser(
        "evaluate",
        help="test ELBO of a trained run",
        description="Recompute a run's ELBO from its checkpoint.",
    )
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder")
    evaluate.add_argument(
        "--split",
        default="test",
        choices=("train", "valid", "test"),
        help="which split to evaluate (default: test)",
    )
    evaluate.add_argument(
        "--num-samples",
        type=int,
        default=5000,
        metavar="K",
        help="importance samples per image for log p(x) (default: 5000)",
    )
    evaluate.add_argument(
        "--max-images",
        type=int,
        default=None,
        metavar="N",
        help="only the first N images of the split (default: all)",
    )
    evaluate.add_argument(
        "--elbo-only", action="store_true", help="skip the importance-sampled log p(x)"
    )
    evaluate.add_argument(
        "--max-elements",
        type=int,
        default=DEFAULT_MAX_ELEMENTS,
        metavar="N",
        help="memory budget of log p(x): values in the largest tensor of one chunk of images "
        f"and particles (default: {DEFAULT_MAX_ELEMENTS}, 128 MiB of fp32)",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_run_device(evaluate)


def _add_sample_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-vae sample``: a grid of draws from a run's prior."""
    sample = commands.add_parser(
        "sample",
        help="draw images from a trained run's prior",
        description="Write decoder means of z ~ p(z) as a PNG grid.",
    )
    sample.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder")
    sample.add_argument("--num", type=int, default=64, help="number of images (default: 64)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="PNG to write (default: RUN_DIR/samples-seed<SEED>.png)",
    )
    _add_run_device(sample)


def _add_viz_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-vae viz``: latent-space images and the run's report."""
    viz = commands.add_parser(
        "viz",
        help="latent-space images and report.html of a trained run",
        description="Write samples, reconstructions, interpolations, latent traversals, a 2-D "
        "latent map and attribute vectors to RUN_DIR/viz/, and RUN_DIR/report.html.",
    )
    viz.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder")
    viz.add_argument("--num-pairs", type=int, default=6, help="interpolated pairs (default: 6)")
    viz.add_argument(
        "--max-dims", type=int, default=10, help="latent dimensions traversed (default: 10)"
    )
    viz.add_argument(
        "--attribute-class",
        type=int,
        nargs="+",
        default=[],
        metavar="C",
        help="also the attribute vector of label C (images of class C minus the rest)",
    )
    viz.add_argument("--tsne", action="store_true", help="also a t-SNE map (slower)")
    _add_run_device(viz)


def _add_compare_command(commands: argparse._SubParsersAction) -> None:
    """``pyro-vae compare``: run folders side by side."""
    compare = commands.add_parser(
        "compare",
        help="put run folders side by side",
        description="A table of the runs' differing config fields, epochs, best validation "
        "ELBO, test ELBO and, where evaluated, log p̂(x) ± SE and the share of k̂ > 0.7.",
    )
    compare.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    compare.add_argument("--csv", action="store_true", help="CSV instead of a markdown table")
    compare.add_argument(
        "--plot", type=Path, default=None, metavar="FILE", help="overlay the validation curves"
    )


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config a ``train`` command line asks for: the flags given over the defaults, or,
    with --resume, over the run's stored config."""
    given = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name in args
    }
    # The file's fields, then the flags given beside it (a flag wins).
    given = {**(read_config_file(args.config) if args.config else {}), **given}
    if args.resume is None:
        config = TrainConfig.from_dict(given)
    else:
        if args.out is not None:
            raise UserInputError(
                "--resume and --out conflict: a resumed run continues in its own folder"
            )
        stored = resume_config(args.resume, None).to_dict()
        config = TrainConfig.from_dict({**stored, **given})
    validate(config)
    check_names(config)
    return config


def _train(args: argparse.Namespace) -> None:
    from pyro_vae.trainer import train

    config = train_config_from_args(args)
    if args.resume is not None:
        run = train(config, run_dir=args.resume, progress=not args.quiet, resume=True)
    else:
        run = train(config, run_dir=args.out, progress=not args.quiet)
    if not is_main_process():  # under torchrun rank 0 reports for all
        return
    final = run.history[-1]
    print(f"run folder: {run.run_dir}")
    if final["train_elbo"] is not None:
        seconds = sum(row["seconds"] for row in run.history[1:])
        print(
            f"train ELBO: {final['train_elbo']:.3f} nats per image (last epoch); "
            f"{seconds:.2f} s of training, loss {final.get('compile', 'eager')}, "
            f"{run.config.precision}"
        )
    if final["valid_elbo"] is not None:
        print(f"validation ELBO: {final['valid_elbo']:.3f} nats per image")
    if final.get("test_error") is not None:  # m2
        print(f"test error of argmax q(y|x): {final['test_error']:.2%}")
    print(
        f"test ELBO: {final['test_elbo']:.3f} nats per image "
        f"({run.data.test.shape[0]} test images of {run.config.dataset}, "
        f"{run.data.binarize} binarization, epoch {final['epoch']})"
    )


def _evaluate(args: argparse.Namespace) -> None:
    from pyro_vae import evaluate, log_likelihood
    from pyro_vae.distributed import process_group
    from pyro_vae.importance import write_evaluation
    from pyro_vae.run import read_run_config, resolve_device

    for flag, value in (("--num-samples", args.num_samples), ("--max-elements", args.max_elements)):
        if value < 1:
            raise UserInputError(f"{flag} must be >= 1, got {value}")
    if args.max_images is not None and args.max_images < 1:
        raise UserInputError(f"--max-images must be >= 1, got {args.max_images}")
    device = resolve_device(args.device or read_run_config(args.run_dir).device)
    # Under torchrun the ranks share the images out; rank 0 reports and writes.
    with process_group(device) as group:
        run = _load_run(args)
        result = {"split": args.split, "dataset": run.config.dataset}
        if group.is_main:
            elbo = evaluate(run, args.split)
            n = run.data.split(args.split).shape[0]
            print(
                f"{args.split} ELBO: {elbo:.3f} nats per image ({n} images of {run.config.dataset})"
            )
            result["trace_elbo"] = elbo
            if getattr(run.guide, "classifier", None) is not None:  # m2: q(y|x) classifies
                from pyro_vae.semisupervised import label_error

                error = label_error(run.guide, run.data, args.split, run.config.eval_batch_size)
                print(f"{args.split} error of argmax q(y|x): {error:.2%} ({n} images)")
                result["error"] = error
        if args.elbo_only:
            if group.is_main:
                (args.run_dir / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
            return
        estimate = log_likelihood(
            run,
            args.split,
            args.num_samples,
            args.max_images,
            progress=not args.quiet,
            max_elements=args.max_elements,
            group=group,
        )
    if not group.is_main:
        return
    written = write_evaluation(estimate, args.run_dir, result)
    summary = estimate.summary
    bounds = ", ".join(f"{name} {value:.3f}" for name, value in summary["bounds"].items())
    quantity = "log p(x | y)" if getattr(run.model, "needs_labels", False) else "log p(x)"
    print(
        f"{quantity} ≈ {summary['log_likelihood']:.3f} ± {summary['standard_error'] or 0:.3f} nats "
        f"per image ({summary['num_images']} images, K={args.num_samples} importance samples)"
    )
    if "bits_per_dim" in summary:
        print(f"that is {summary['bits_per_dim']:.4f} bits per dimension")
    print(f"IWAE bounds: {bounds}; gap log p̂(x) - ELBO: {summary['gap']:.3f}")
    print(
        f"PSIS k̂ > 0.7 for {summary['share_khat_above_0.7']:.1%} of the images; "
        f"mean ESS {summary['ess_mean']:.0f} of {args.num_samples}"
    )
    if estimate.warning:
        print(f"warning: {estimate.warning}")
    print("wrote " + ", ".join(str(path) for path in written))


def _sample(args: argparse.Namespace) -> None:
    import torch

    from pyro_vae.plots import save_image_grid

    if args.num < 1:
        raise UserInputError(f"--num must be >= 1, got {args.num}")
    run = _load_run(args)
    out = args.out or args.run_dir / f"samples-seed{args.seed}.png"
    torch.manual_seed(args.seed)
    try:
        save_image_grid(run.model.sample_means(args.num), out)
    except OSError as error:
        raise UserInputError(f"cannot write {out} ({error.strerror or error})") from None
    print(f"wrote {args.num} samples to {out}")


def _viz(args: argparse.Namespace) -> None:
    import json

    from pyro_vae import visualize

    for flag, value in (("--num-pairs", args.num_pairs), ("--max-dims", args.max_dims)):
        if value < 1:
            raise UserInputError(f"{flag} must be >= 1, got {value}")
    run = _load_run(args)
    missing = [c for c in args.attribute_class if not (run.data.test_labels == c).any()]
    if missing:
        raise UserInputError(
            f"no test image has label {missing[0]}; labels present: "
            f"{sorted(set(run.data.test_labels.tolist()))}"
        )
    report = visualize(run, args.num_pairs, args.max_dims, tuple(args.attribute_class), args.tsne)
    latent = json.loads((args.run_dir / "viz" / "latent.json").read_text())
    print(f"active units: {latent['active_units']} of {latent['latent_dim']}")
    print(f"wrote images to {args.run_dir / 'viz'} and the report {report}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, ``pyro-vae: warning: ...``, without the source line; under
    torchrun from the first process of each machine only (the others meet the same)."""
    if speaks_for_machine():
        print(f"pyro-vae: warning: {one_line(str(message))}", file=sys.stderr)


def _report(message: str) -> None:
    if speaks_for_machine():
        print(f"pyro-vae: {one_line(message)}", file=sys.stderr)


def _compare(args: argparse.Namespace) -> None:
    from pyro_vae.compare import compare_runs, csv_table, markdown_table
    from pyro_vae.plots import save_overlaid_curves
    from pyro_vae.run import read_history

    rows = compare_runs(args.run_dirs)
    print(csv_table(rows) if args.csv else markdown_table(rows), end="")
    if args.plot is not None:
        histories = {str(run_dir): read_history(run_dir) for run_dir in args.run_dirs}
        save_overlaid_curves(histories, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "train": _train,
        "evaluate": _evaluate,
        "sample": _sample,
        "viz": _viz,
        "compare": _compare,
    }
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        with flushed_denormals():  # before torch starts its threads, which inherit the mode
            handlers[args.command](args)
    except UserInputError as error:
        _report(f"error: {error}")
        return EXIT_USAGE
    except TrainingInterrupted as interrupted:
        _report(str(interrupted))
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _report("interrupted")
        return EXIT_INTERRUPTED
    finally:
        warnings.showwarning = shown
    return 0


if __name__ == "__main__":
    sys.exit(main())
