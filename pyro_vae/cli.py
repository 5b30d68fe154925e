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

from pyro_vae.ais import SCHEDULES as AIS_SCHEDULES
from pyro_vae.ais import STARTS as AIS_STARTS
from pyro_vae.config import (
    DEVICES,
    RESUMABLE_CHANGES,
    USER_PAIR,
    TrainConfig,
    read_config_file,
    validate,
)
from pyro_vae.data import DATASET_NAMES
from pyro_vae.distributed import is_main_process, speaks_for_machine
from pyro_vae.errors import UserInputError
from pyro_vae.importance import DEFAULT_MAX_ELEMENTS
from pyro_vae.labels import classifies, needs_labels
from pyro_vae.plugins import environment_plugins, import_plugins, load_entry_points
from pyro_vae.policies import run_failure
from pyro_vae.registry import check_names, names
from pyro_vae.run import flushed_denormals
from pyro_vae.run_folder import CHECKPOINTS, RunFolder
from pyro_vae.schedules import best_epoch, patience_exhausted
from pyro_vae.trainer import TrainingInterrupted

EXIT_USAGE = 2
COLLAPSE_CHECK_EPOCHS = 20
EXIT_INTERRUPTED = 130

_DEFAULTS = TrainConfig()


def _flag(field: str) -> str:
    """The flag of a config field: ``--no-NAME`` for a switch that is on by default."""
    prefix = "--no-" if getattr(_DEFAULTS, field) is True else "--"
    return prefix + field.replace("_", "-")


def _one_of(values: Sequence[str]) -> str:
    return "one of: " + ", ".join(values)


def train_help(name: str) -> str:
    """The help of config field ``name``, as its ``option`` in ``pyro_vae.config`` gives it,
    with its valid values filled in (a registry kind's names as they are now)."""
    metadata = next(f for f in dataclasses.fields(TrainConfig) if f.name == name).metadata
    choices = metadata["choices"]
    if choices == "dataset":
        choices = DATASET_NAMES
    elif isinstance(choices, str):
        choices = names(choices)
    return metadata["help"].format(choices=_one_of(choices) if choices else "")


_NONE_DEFAULT_TYPES = {
    "clip_norm": float,
    "checkpoint_minutes": float,
    "valid_size": int,
    "labels": int,
    "classifier_weight": float,
}


def one_line(text: str) -> str:
    """``text`` as one line: line breaks and runs of spaces become one space (a library's
    wrapped message reads as text), other control characters are escaped."""
    text = " ".join(text.split())
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
        if f.name == "plugins":  # --import, on every command (_add_import)
            continue
        flag = _flag(f.name)
        default = getattr(_DEFAULTS, f.name)
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        shows_default = default is not None and default is not True  # not for a switch
        help_text = train_help(f.name) + (f" (default: {shown})" if shows_default else "")
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
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


def _add_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, whose pyro_vae.register() calls add parts by name "
        "(repeatable; also $PYRO_VAE_IMPORT, comma-separated, and the installed entry "
        "points of group pyro_vae.parts); a run records the modules it was trained with",
    )


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


def import_run_plugins(run_dir: Path) -> None:
    """Import the plug-in modules a run was trained with, naming one that is missing."""
    config = RunFolder(run_dir).read_existing_config()
    import_plugins(config.plugins, needed_by=f"run {run_dir}")


def _load_run(args: argparse.Namespace):
    """The run of ``args.run_dir``, saying once which parameters it holds."""
    from pyro_vae import load_run

    import_run_plugins(args.run_dir)
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
    _add_import(train)
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
    _add_import(evaluate)
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
    method = evaluate.add_argument_group(
        "AIS and BDMC (pyro_vae.ais): a second estimator, and a check of the first"
    )
    method.add_argument(
        "--method",
        default="is",
        choices=("is", "ais", "bdmc"),
        help="is: importance sampling from the guide (K = --num-samples); ais: annealed "
        "importance sampling with HMC; bdmc: on --bdmc-images images simulated from the "
        "model, forward and reverse AIS bound each log p(x) from below and above, and the "
        "IS estimate is placed between them (default: is)",
    )
    method.add_argument(
        "--steps", type=int, nargs="+", default=[500], metavar="T",
        help="annealing steps (bdmc: one run per value given; default: 500)",
    )  # fmt: skip
    method.add_argument("--chains", type=int, default=16, help="chains per image (default: 16)")
    method.add_argument(
        "--leapfrog-steps", type=int, default=10, help="leapfrog steps per HMC move (default: 10)"
    )
    method.add_argument(
        "--schedule", default="sigmoid", choices=AIS_SCHEDULES,
        help="β from 0 to 1: sigmoid (Grosse et al.) or linear (default: sigmoid)",
    )  # fmt: skip
    method.add_argument(
        "--start", default="guide", choices=AIS_STARTS,
        help="the annealing's start: the guide q(z|x) or the prior p(z) (default: guide)",
    )  # fmt: skip
    method.add_argument(
        "--bdmc-images", type=int, default=100, help="simulated images of bdmc (default: 100)"
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
    _add_import(sample)
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
    _add_import(viz)
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
    _add_import(compare)
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
    asked = [*environment_plugins(), *args.imports]
    stored = None
    if args.resume is not None:
        stored = RunFolder(args.resume).resume_config(None)  # refuses a missing folder
        import_plugins(stored.plugins, needed_by=f"run {args.resume}")
        asked = [*stored.plugins, *asked]
    if asked:
        given["plugins"] = list(dict.fromkeys([*given.get("plugins", []), *asked]))
    dataset = given.get("dataset")
    if isinstance(dataset, str) and dataset.endswith(".npz"):
        # stored absolute, so that evaluate and viz find it from any folder
        given["dataset"] = str(Path(dataset).expanduser().resolve())
    if args.resume is None:
        config = TrainConfig.from_dict(given)
    else:
        if args.out is not None:
            raise UserInputError(
                "--resume and --out conflict: a resumed run continues in its own folder"
            )
        config = TrainConfig.from_dict({**stored.to_dict(), **given})
    validate(config)
    check_names(config)
    return config


def _train(args: argparse.Namespace) -> None:
    from pyro_vae.registry import objective_name
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
            f"train {objective_name(run.config)}: {final['train_elbo']:.3f} nats per image "
            "(last epoch); "
            f"{seconds:.2f} s of training, loss {final.get('compile', 'eager')}, "
            f"{run.config.precision}"
        )
    if final["valid_elbo"] is not None:
        print(f"validation ELBO: {final['valid_elbo']:.3f} nats per image")
    shown, which = final, ""
    patience = run.config.early_stopping
    if patience and any(row.get("valid_elbo") is not None for row in run.history):
        best = best_epoch(run.history)
        shown = next(row for row in run.history if row["epoch"] == best)
        which = ", the best validation ELBO's, kept in best.pt"
        if patience_exhausted(run.history, patience):
            print(
                f"early stopping: no better validation ELBO for {patience} epochs, so training "
                f"stopped after epoch {final['epoch']}; the best was epoch {best}"
            )
    if shown.get("test_error") is not None:  # m2
        print(f"test error of argmax q(y|x): {shown['test_error']:.2%}")
    print(
        f"test ELBO: {shown['test_elbo']:.3f} nats per image "
        f"({run.data.test.shape[0]} test images of {run.config.dataset}, "
        f"{run.data.binarize} binarization, epoch {shown['epoch']}{which})"
    )
    failure = run_failure(run.history)
    if failure is not None:
        raise UserInputError(f"{failure} (run folder {run.run_dir}, kept)")
    warn_if_collapsed(run)


def warn_if_collapsed(run) -> None:
    """Warn where no latent unit is active at the end (posterior collapse), naming the
    usual remedies; registry models without labels (the latent tools' measure), after
    COLLAPSE_CHECK_EPOCHS epochs or more (in the first few, units are often not yet awake:
    the default digits run has none active after 10 epochs, several after 100)."""
    from pyro_vae.labels import class_conditional
    from pyro_vae.latent import ACTIVE_UNIT_THRESHOLD, latent_stats

    if class_conditional(run.model) or not hasattr(run.guide, "posterior"):
        return
    if run.history[-1]["epoch"] < COLLAPSE_CHECK_EPOCHS:
        return
    images = next(run.data.eval_batches("test", 1000), None)
    if images is None:
        return
    if latent_stats(run.model, run.guide, images, num_draws=16).active_units == 0:
        warnings.warn(
            f"no latent unit is active at the end (Cov_x E_q[z_d|x] <= {ACTIVE_UNIT_THRESHOLD} "
            "for every d): the posterior collapsed onto the prior, and the decoder ignores "
            "z; a KL warm-up (--kl-warmup-epochs N) or a β below 1 (--beta) usually prevents it",
            stacklevel=2,
        )


def images_digest(images) -> str:
    """The SHA-256 of a split's images (their bytes, in order): two evaluations are paired
    image by image, over the first images both scored, only where theirs agree."""
    import hashlib

    return hashlib.sha256(images.contiguous().cpu().numpy().tobytes()).hexdigest()


def _locked(command: str, handler):
    """``handler(args)`` holding the run folder's lock on the main process (it writes
    there): a training run or another evaluation of the same folder is refused meanwhile."""

    def run(args: argparse.Namespace) -> None:
        if not is_main_process() or not args.run_dir.is_dir():  # the handler refuses it
            return handler(args)
        with RunFolder(args.run_dir).lock(f"pyro-vae {command}"):
            return handler(args)

    return run


def _evaluate(args: argparse.Namespace) -> None:
    from pyro_vae import evaluate, log_likelihood
    from pyro_vae.distributed import process_group
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
        result = {"split": args.split, "dataset": run.config.dataset, "method": args.method}
        # the whole split's: its first N images are the N an evaluation scores
        result["split_sha256"] = images_digest(run.data.split(args.split))
        if args.method == "is":
            result["num_samples"] = args.num_samples
        if group.is_main:
            elbo = evaluate(run, args.split)
            n = run.data.split(args.split).shape[0]
            print(
                f"{args.split} ELBO: {elbo:.3f} nats per image ({n} images of {run.config.dataset})"
            )
            result["trace_elbo"] = elbo
            if classifies(run.guide):  # m2: q(y|x)
                from pyro_vae.semisupervised import label_error

                error = label_error(run.guide, run.data, args.split, run.config.eval_batch_size)
                print(f"{args.split} error of argmax q(y|x): {error:.2%} ({n} images)")
                result["error"] = error
        if args.elbo_only:
            if group.is_main:
                RunFolder(args.run_dir).write_evaluation_summary(result)
            return
        if args.method != "is":
            if group.is_parallel:
                raise UserInputError(f"--method {args.method} runs in one process, not torchrun")
            _evaluate_by_annealing(args, run, result)
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
    written = RunFolder(args.run_dir).write_evaluation(estimate, result)
    summary = estimate.summary
    bounds = ", ".join(f"{name} {value:.3f}" for name, value in summary["bounds"].items())
    quantity = "log p(x | y)" if needs_labels(run.model) else "log p(x)"
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


def _evaluate_by_annealing(args: argparse.Namespace, run, result: dict) -> None:
    """``evaluate --method ais`` or ``--method bdmc``: files of their own, beside any IS
    evaluation (never over it)."""
    from tqdm.auto import tqdm

    from pyro_vae.ais import AnnealingSettings, ais_log_likelihood, bdmc

    settings = AnnealingSettings(
        num_steps=args.steps[0], num_chains=args.chains, leapfrog_steps=args.leapfrog_steps,
        schedule=args.schedule, start=args.start,
    )  # fmt: skip
    folder = RunFolder(args.run_dir)
    if args.method == "bdmc":
        outcome = bdmc(run.model, run.guide, args.bdmc_images, args.steps, settings,
                       num_samples=args.num_samples)  # fmt: skip
        written = folder.write_bdmc(outcome, result)
        for row in outcome.summary["rows"]:
            inside = ""
            if "importance_minus_lower" in row:
                inside = (f"; IS (K={args.num_samples}) {row['importance_minus_lower']:+.3f} "
                          "from the lower")  # fmt: skip
            print(f"{row['steps']} steps: lower {row['lower']:.3f}, upper {row['upper']:.3f}, "
                  f"gap {row['gap']:.3f}{inside}")  # fmt: skip
    else:
        images, labels = run.data.inputs(args.split), run.data.split_labels(args.split)
        if args.max_images is not None:
            images, labels = images[: args.max_images], labels[: args.max_images]
        with tqdm(total=images.shape[0], disable=args.quiet, unit="image") as bar:
            estimate = ais_log_likelihood(
                run.model, run.guide, images, settings,
                max_elements=args.max_elements, labels=labels, progress=bar.update,
                condition_on_labels=needs_labels(run.model),
            )  # fmt: skip
        written = folder.write_ais_evaluation(estimate, result)
        summary = estimate.summary
        print(
            f"AIS log p(x) ≈ {summary['log_likelihood']:.3f} ± {summary['standard_error'] or 0:.3f}"
            f" nats per image ({summary['num_images']} images, {settings.num_steps} steps × "
            f"{settings.num_chains} chains); mean acceptance {summary['acceptance_mean']:.2f}, "
            f"mean ESS {summary['ess_mean']:.1f} of {settings.num_chains}, "
            f"{summary['seconds']:.0f} s"
        )
    print("wrote " + ", ".join(str(path) for path in written))


def _sample(args: argparse.Namespace) -> None:
    import torch

    from pyro_vae.plots import save_image_grid

    if args.num < 1:
        raise UserInputError(f"--num must be >= 1, got {args.num}")
    run = _load_run(args)
    if not hasattr(run.model, "sample_means"):
        raise UserInputError(
            "this user pair's run has no decoder mean E[x|z] to draw: return "
            "pyro_vae.PairParts(model, guide, decoder_mean) from its builder"
        )
    out = args.out or args.run_dir / f"samples-seed{args.seed}.png"
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".pdf", ".svg"):
        raise UserInputError(f"--out {out} names no image format; give a .png file (say {out}.png)")
    torch.manual_seed(args.seed)
    try:
        save_image_grid(run.model.sample_means(args.num), out)
    except OSError as error:
        raise UserInputError(f"cannot write {out} ({error.strerror or error})") from None
    print(f"wrote {args.num} samples to {out}")


def _viz(args: argparse.Namespace) -> None:

    from pyro_vae import visualize

    for flag, value in (("--num-pairs", args.num_pairs), ("--max-dims", args.max_dims)):
        if value < 1:
            raise UserInputError(f"{flag} must be >= 1, got {value}")
    run = _load_run(args)
    if run.config.model == USER_PAIR:
        from pyro_vae.run import write_images

        out = args.run_dir / "viz"
        out.mkdir(exist_ok=True)
        write_images(run, out)
        print(f"wrote images to {out}: a user pair's samples, reconstructions and curves (the "
              "latent-space pictures read the registry's latent layout)")  # fmt: skip
        return
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

    for run_dir in args.run_dirs:
        if Path(run_dir).is_dir():
            import_run_plugins(run_dir)
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
        "evaluate": _locked("evaluate", _evaluate),
        "sample": _sample,
        "viz": _locked("viz", _viz),
        "compare": _compare,
    }
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        load_entry_points()
        import_plugins([*environment_plugins(), *args.imports])
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
    except OSError as error:  # a full disk, a folder that went away
        where = f" ({error.filename})" if error.filename else ""
        _report(
            f"error: could not read or write a file{where}: {error.strerror or error}; files "
            "written before (the last good checkpoint) are kept"
        )
        return EXIT_USAGE
    finally:
        warnings.showwarning = shown
    return 0


if __name__ == "__main__":
    sys.exit(main())
