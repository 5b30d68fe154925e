"""Reproduce published log-likelihoods on dynamically binarized MNIST, and write RESULTS.md.

Each row of ``ROWS`` is one configuration of a paper, trained with ``pyro-vae train`` in a
run folder of its own under ``--runs-dir`` (keep it outside the checkout), then scored with
``pyro-vae evaluate``: log p̂(x) with K = 5000 importance samples on all 10,000 test images
(binarized once with a fixed seed, ``pyro_vae.data``), mean ± standard error, the ELBO, and
the share of images whose PSIS k̂ exceeds 0.7. A row whose training is cut short by
``--max-minutes`` keeps its checkpoint; the next invocation continues it from there
(bit for bit on the CPU) and evaluates it again. RESULTS.md is rewritten from whatever the
run folders hold, each row's learning curve written as an image beside it; a row whose run
folder holds no evaluation (a new machine starts without the folders) keeps the line and
section the file last gave it, so rewriting the table never erases a measured row.

Each evaluation is also kept under ``RUN/evaluations/epoch-N/``: a row measured against
another (C against B) is paired image by image with the other row's evaluation after the
same epochs where one was kept, as well as with its latest, since a difference between
runs of unequal length says more about their lengths than about their objectives.

    python scripts/reproduce_mnist.py --rows A B --max-minutes 60 \\
        --runs-dir ~/pyro-vae-runs/mnist --data-dir ../shared/data
    python scripts/reproduce_mnist.py --max-minutes 0     # only evaluate and rewrite the table

Rows F1 and F2 ask for a GPU; on a CPU they are skipped unless ``--epochs`` caps the run
(the small-scale check of their commands, as the tests do with ``--dataset digits``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiment_runs, beside this file

from experiment_runs import (  # noqa: E402
    EXIT_INTERRUPTED,
    Children,
    add_run_options,
    config_changes,
    environment,
    marked_sections,
    parsed,
    python_command,
    run_rows,
    shell_line,
    training_finished,
    training_seconds,
)

from pyro_vae.compare import paired_difference  # noqa: E402
from pyro_vae.run import read_config, read_history  # noqa: E402
from pyro_vae.run_folder import EVALUATION_NAME, PER_IMAGE_NAME  # noqa: E402
from pyro_vae.schedules import best_epoch  # noqa: E402


@dataclass(frozen=True)
class Row:
    key: str
    configuration: str
    flags: tuple[str, ...]
    published_nll: float | None
    source: str  # where the published number is printed, and how it was obtained
    target: str
    gpu: bool = False
    against: str | None = None  # the row whose NLL is the target, compared image by image


# Burda et al. (2016), section 5: 784-200-200-50 with tanh, Bernoulli output, Adam with
# ε = 1e-4 (as in their code, github.com/yburda/iwae, optimizers.py) and batches of 20 on
# the training images (no validation split: their code holds 400 out and never uses
# them), 3^i epochs at 1e-3·10^(-i/7) for i = 0..7 (3,280 epochs), dynamic binarization,
# NLL with k = 5000.
IWAE_PAPER = (
    "--latent-dim", "50", "--hidden-dims", "200", "200", "--activation", "tanh",
    "--valid-size", "0", "--batch-size", "20", "--lr", "0.001", "--lr-schedule", "burda",
    "--adam-eps", "0.0001", "--epochs", "3280",
)  # fmt: skip
# Tomczak & Welling (2018), section 4 and their code's defaults (experiment.py): 40 latent
# units, two gated dense layers of 300, 500 pseudo-inputs, Adam 5e-4, batches of 100,
# KL warm-up over 100 epochs, early stopping after 50 epochs on a 10,000-image validation
# split, at most 2,000 epochs; NLL with 5,000 importance samples.
VAMP_NETWORK_AND_TRAINING = (
    "--encoder", "gated-mlp", "--decoder", "gated-mlp", "--hidden-dims", "300", "300",
    "--latent-dim", "40", "--lr", "0.0005", "--batch-size", "100", "--kl-warmup-epochs", "100",
    "--early-stopping", "50", "--epochs", "2000",
)  # fmt: skip
VAMP_PAPER = (*VAMP_NETWORK_AND_TRAINING, "--prior", "vamp", "--prior-components", "500")
# Their two-layer VAE (models/VAE_2level.py of their code, the "HVAE (L=2)" of Table 2):
# p(z2) p(z1|z2) p(x|z1,z2) with q(z2|x) q(z1|x,z2), z1 and z2 of 40 units each.
TWO_LAYERS = ("--model", "hvae-skip", "--top-latent-dim", "40")
# Burda et al.'s two-layer chain p(z2) p(z1|z2) p(x|z1), q(z1|x) q(z2|z1), with the same
# layer sizes: the model rows E and Es trained before the paper's own was built.
CHAIN_TWO_LAYERS = ("--model", "hvae", "--top-latent-dim", "40")
# What Burda et al.'s code does besides its schedule and ε (nnet.py, iwae.py, datasets.py,
# optimizers.py): its init, Glorot-uniform weights, the output bias at the logit of the
# training images' mean and σ = exp(a) in q(z|x); and Adam β1 0.99 (scripts/ablate_mnist.py
# measures the two apart). Not copied: its Adam's second moment starting at 1 and its
# one-step-late moments, one seed for every layer's draw, and 400 training images held out
# unused.
BURDA_INIT = ("--weight-init", "glorot-uniform", "--output-bias", "data-logit", "--guide-scale",
              "exp")  # fmt: skip
BURDA_BETA1 = ("--adam-beta1", "0.99")
BURDA_CODE = (*BURDA_INIT, *BURDA_BETA1)
WITH_BURDA_CODE = (
    "with Burda et al.'s init (Glorot, output bias at the data's logit), σ = exp(a) and "
    "Adam β1 0.99"
)
BURDA = "Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Table 1"
NO_DREG_NUMBER = "no published number (Tucker et al. 2019 report other networks)"
# The dynamic-MNIST column of their Table 2: our rows train on images binarized afresh at
# every pass and test on t10k binarized once, as the authors' "dynamic MNIST" does. The
# static column (85.57 for the VampPrior VAE, the reference pythae's reproducibility table
# gives for static Binary MNIST) is another data set and is not compared with.
VAMP = (
    "Tomczak & Welling, VAE with a VampPrior, AISTATS 2018, Table 2, dynamic-MNIST column "
    "(values as issue 39 gives them; the Exemplar VAE paper's reruns of the authors' code, "
    "Norouzi et al. 2020, agree within 0.3)"
)

ROWS = {
    row.key: row
    for row in (
        Row("A", "VAE: 1 stochastic layer (50), 2×200 tanh, k=1", (*IWAE_PAPER, "--elbo", "trace"),
            86.76, f"{BURDA}, VAE k=1", "≤ 87.0"),
        # A plus the rest of Burda et al.'s code (BURDA_CODE); measured against A.
        Row("Ab", f"row A {WITH_BURDA_CODE}",
            (*IWAE_PAPER, "--elbo", "trace", *BURDA_CODE),
            86.76, f"{BURDA}, VAE k=1", "≤ 87.0", against="A"),
        Row("B", "IWAE k=5, same network", (*IWAE_PAPER, "--elbo", "iwae", "--num-particles", "5"),
            85.54, f"{BURDA}, IWAE k=5", "≤ 85.8"),
        # B with the choices that carried row Ab past row A's target; row B's own run is on
        # another machine, so Bb is compared with the published number and with Ab.
        Row("Bb", f"row B {WITH_BURDA_CODE}",
            (*IWAE_PAPER, "--elbo", "iwae", "--num-particles", "5", *BURDA_CODE),
            85.54, f"{BURDA}, IWAE k=5", "≤ 85.8"),
        Row("C", "IWAE k=5 with DReG gradients, same network",
            (*IWAE_PAPER, "--elbo", "iwae-dreg", "--num-particles", "5"),
            None, NO_DREG_NUMBER, "below B",
            against="B"),
        # C with the choices of Bb, measured against Bb: DReG against plain IWAE gradients
        # with Burda et al.'s code, once both have run the same epochs.
        Row("Cb", f"row C {WITH_BURDA_CODE}",
            (*IWAE_PAPER, "--elbo", "iwae-dreg", "--num-particles", "5", *BURDA_CODE),
            None, NO_DREG_NUMBER, "below Bb",
            against="Bb"),
        Row("D", "VampPrior (500 pseudo-inputs), 1 stochastic layer (40), 2×300 gated MLP",
            VAMP_PAPER, 82.38, f"{VAMP}, VAE (L=1) + VampPrior", "≤ 82.88"),
        # The authors' pseudo-inputs: w clamped into [0, 1] by a hardtanh, w from 0.05 ± 0.01.
        Row("Dh", "row D with the authors' pseudo-inputs (hardtanh into [0, 1])",
            (*VAMP_PAPER, "--pseudo-inputs", "hardtanh"), 82.38,
            f"{VAMP}, VAE (L=1) + VampPrior", "≤ 82.88"),
        # Dh plus the authors' encoder: log σ² of q(z|x) bounded to [-6, 2] by a hardtanh;
        # one difference from Dh, measured against it image by image.
        Row("Dv", "row Dh with the authors' bounded log-variance of q(z|x) (hardtanh [-6, 2])",
            (*VAMP_PAPER, "--pseudo-inputs", "hardtanh", "--guide-scale", "bounded-logvar"),
            82.38, f"{VAMP}, VAE (L=1) + VampPrior", "≤ 82.88", against="Dh"),
        # Dv plus the rest of what the authors' code does differently: He-normal weights
        # and AdamNormGrad (utils/nn.py, utils/optimizer.py); measured against Dv.
        Row("Da", "row Dv with the authors' He-normal weights and AdamNormGrad optimizer",
            (*VAMP_PAPER, "--pseudo-inputs", "hardtanh", "--guide-scale", "bounded-logvar",
             "--weight-init", "he-normal", "--optimizer", "adam-normgrad"),
            82.38, f"{VAMP}, VAE (L=1) + VampPrior", "≤ 82.88", against="Dv"),
        # D with N(0, I) for p(z), and nothing else changed: the paper's "standard" row.
        Row("Ds", "row D with the standard normal prior in place of the VampPrior",
            (*VAMP_NETWORK_AND_TRAINING, "--prior", "standard-normal"), 84.50,
            f"{VAMP}, VAE (L=1) + standard prior", "(control)"),
        Row("E", "the paper's two-level VAE (40+40, decoding from z1 and z2, inferring z2 "
            "first) + VampPrior, 2×300 gated MLP", (*TWO_LAYERS, *VAMP_PAPER),
            81.24, f"{VAMP}, HVAE (L=2) + VampPrior", "≤ 81.74"),
        # E with N(0, I) for the top layer's p(z2): the paper's "standard" HVAE row.
        Row("Es", "row E with the standard normal prior on z2 in place of the VampPrior",
            (*TWO_LAYERS, *VAMP_NETWORK_AND_TRAINING, "--prior", "standard-normal"), 82.42,
            f"{VAMP}, HVAE (L=2) + standard prior", "(control)"),
        # The rows E and Es were before the paper's model was built: Burda et al.'s chain
        # with the VampPrior on z2, which the paper does not train, so no number is quoted.
        Row("Ec", "Burda et al.'s two-layer chain (40+40, decoding from z1, inferring z1 "
            "first) + VampPrior, 2×300 gated MLP", (*CHAIN_TWO_LAYERS, *VAMP_PAPER), None,
            "not in the paper: its two-level VAE decodes from both layers (row E)", "(beside E)"),
        Row("Ecs", "row Ec with the standard normal prior on z2 in place of the VampPrior",
            (*CHAIN_TWO_LAYERS, *VAMP_NETWORK_AND_TRAINING, "--prior", "standard-normal"),
            None, "a control for row Ec: the same network and training with p(z2) = N(0, I)",
            "(control)"),
        Row("F1", "IWAE k=50, the network of A",
            (*IWAE_PAPER, "--elbo", "iwae", "--num-particles", "50"),
            84.78, f"{BURDA}, IWAE k=50", "≤ 85.0", gpu=True),
        # The flow is on z1 only: the VampPrior's components are the top guide q(z2 | u_k),
        # and under an IAF their density needs its sequential inverse for every component.
        Row("F2", "conv HVAE (40+40) + VampPrior, IAF guide on z1",
            (*CHAIN_TWO_LAYERS, "--encoder", "conv", "--decoder", "conv", "--guide", "iaf",
             "--top-guide", "diag-normal", "--latent-dim", "40", "--prior", "vamp",
             "--prior-components", "500", "--lr", "0.0005", "--batch-size", "100",
             "--kl-warmup-epochs", "100", "--early-stopping", "50", "--epochs", "2000"),
            79.75, f"{VAMP}, convHVAE (L=2) + VampPrior (no flow guide there)",
            "≤ 80.25", gpu=True),
    )
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Running one row: train until done or out of minutes, then evaluate what it holds

RECORD_NAME = "reproduce.json"  # what this script measured, beside pyro-vae's own files
EVALUATION_FILES = (EVALUATION_NAME, PER_IMAGE_NAME, RECORD_NAME)


def read_record(folder: Path) -> dict | None:
    """What this script recorded of the evaluation in ``folder`` (a run folder, or an
    evaluation kept by :func:`keep_evaluation`), or None where it holds none."""
    path = folder / RECORD_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def train_command(row: Row, run_dir: Path, args: argparse.Namespace) -> list[str]:
    """A new run with the row's flags, or the continuation of the run in ``run_dir``."""
    data = ["--data-dir", str(args.data_dir)] + (["--no-download"] if args.no_download else [])
    cap = ["--epochs", str(args.epochs)] if args.epochs is not None else []
    if (run_dir / "checkpoint.pt").is_file():
        return python_command("train", "--resume", str(run_dir), *data, *cap, "--quiet")
    dataset = ["--dataset", args.dataset, "--seed", str(args.seed)]
    return python_command(
        "train", *dataset, *row.flags, *data, *cap, "--out", str(run_dir), "--quiet"
    )


def run_row(row: Row, args: argparse.Namespace, children: Children) -> str:
    """Train the row for up to ``--max-minutes``, then evaluate it if its parameters changed."""
    run_dir = args.runs_dir / row.key
    log = args.runs_dir / f"{row.key}.log"
    failed = children.train(train_command(row, run_dir, args), run_dir, log, args)
    if failed is not None:
        return f"row {row.key}: training failed (exit {failed}); see {log}"
    if children.stopping.is_set():
        return f"row {row.key}: stopped; the next invocation continues it"
    if not (run_dir / "checkpoint.pt").is_file():
        return f"row {row.key}: nothing to evaluate"
    trained = read_history(run_dir)[-1]["epoch"]
    wanted = {"trained_epochs": trained, "num_samples": args.num_samples,
              "max_images": args.max_images}  # fmt: skip
    recorded = read_record(run_dir)
    if recorded is not None and _subset(wanted, recorded):
        return f"row {row.key}: evaluation of epoch {trained} is current"
    command = python_command("evaluate", str(run_dir), "--num-samples", str(args.num_samples))
    if args.max_images is not None:
        command += ["--max-images", str(args.max_images)]
    started = time.perf_counter()
    code = children.run([*command, "--quiet"], log, None, args.threads)
    if code != 0:
        return f"row {row.key}: evaluation failed (exit {code}); see {log}"
    evaluation = json.loads((run_dir / EVALUATION_NAME).read_text())
    (run_dir / RECORD_NAME).write_text(json.dumps({
        **wanted, "evaluation_seconds": time.perf_counter() - started,
        "parameters_from": _parameters_line(log), "evaluation": evaluation, **environment(),
    }, indent=2) + "\n")  # fmt: skip
    keep_evaluation(run_dir, trained)
    return f"row {row.key}: evaluated epoch {trained}"


def kept_evaluation(run_dir: Path, epochs: int) -> Path:
    """Where the evaluation of the run after ``epochs`` epochs is kept: it outlives the run
    folder's own files, which the next evaluation replaces."""
    return run_dir / "evaluations" / f"epoch-{epochs}"


def keep_evaluation(run_dir: Path, epochs: int) -> None:
    """Copy the evaluation just written, so that a row measured against this one can still
    be paired with it at equal epochs once this row has trained on and been evaluated again."""
    folder = kept_evaluation(run_dir, epochs)
    folder.mkdir(parents=True, exist_ok=True)
    for name in EVALUATION_FILES:
        shutil.copy2(run_dir / name, folder / name)


def _subset(wanted: dict, record: dict) -> bool:
    return all(record.get(key) == value for key, value in wanted.items())


def _parameters_line(log: Path) -> str:
    """What ``pyro-vae evaluate`` said it loaded ("epoch N, best validation ELBO", say)."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("parameters: ")]
    return lines[-1].removeprefix("parameters: ") if lines else ""


# ---------------------------------------------------------------------------------------------
# RESULTS.md


def row_report(
    row: Row, args: argparse.Namespace, previous: dict[str, tuple[str, str]]
) -> tuple[str, str]:
    """The row's line of the summary table, and its section with the details; ``previous``
    (:func:`previous_rows`) where the run folder holds no evaluation."""
    run_dir = args.runs_dir / row.key
    title = f"| {row.key} | {row.configuration} |"
    published = "—" if row.published_nll is None else f"{row.published_nll:.2f}"
    record = read_record(run_dir)
    if record is None:
        if row.key in previous and " ± " in previous[row.key][0]:  # it holds a measurement
            return with_current_reference(row, *previous[row.key])
        status = "not run: needs a GPU" if row.gpu else "not run yet"
        if (run_dir / "checkpoint.pt").is_file():
            status = f"{read_history(run_dir)[-1]['epoch']}, not evaluated yet"
        return f"{title} {status} | | | | | {published} | | {row.target} |", ""
    summary, config = record["evaluation"], read_config(run_dir)
    # Up to the evaluated epoch: a run stopped while training on (a session that ended
    # before its next evaluation) has more epochs than the number beside them says.
    history = [h for h in read_history(run_dir) if h["epoch"] <= record["trained_epochs"]]
    nll, se = -summary["log_likelihood"], summary["standard_error"] or 0.0
    seconds = training_seconds(history)
    epochs = f"{record['trained_epochs']} of {config.epochs}"
    if training_finished(run_dir) and record["trained_epochs"] < config.epochs:
        epochs += " (early stop)"
    difference = "" if row.published_nll is None else f"{nll - row.published_nll:+.2f}"
    comparison = against_row(row, args)
    if comparison and row.published_nll is None:  # the other row is the target
        difference = comparison[0]
    images = summary["num_images"]
    subset = f" (first {images:,} test images)" if record["max_images"] else ""
    line = (
        f"{title} {epochs} | {seconds / 3600:.2f} h | {nll:.2f} ± {se:.2f}{subset} | "
        f"{-summary['elbo']:.2f} | {summary['share_khat_above_0.7']:.1%} | {published} | "
        f"{difference} | {row.target} |"
    )
    curve = args.figures_dir / f"mnist-{row.key}.png"
    save_curve(history, curve, f"row {row.key}: {row.configuration}")
    late = args.figures_dir / f"mnist-{row.key}-late.png"
    beside = save_late_curve(row, history, args.runs_dir, late)
    flags = train_command(row, Path("RUN"), _fresh(args))
    changes = config_changes(flags, run_dir)
    section = "\n".join([
        f"### Row {row.key}: {row.configuration}",
        "",
        f"- command: `{shell_line(flags)}`, then "
        f"`pyro-vae evaluate RUN --num-samples {record['num_samples']}`"
        + (f" `--max-images {record['max_images']}`" if record["max_images"] else ""),
        f"- epochs: {epochs}; training {seconds:.0f} s; evaluation "
        f"{record['evaluation_seconds']:.0f} s; parameters: {record['parameters_from']}",
        *([f"- trained before the row's command last changed, so with another config "
           f"(command -> run): {'; '.join(changes)}"] if changes else []),
        f"- device: {record['device']}; {record['versions']}; evaluated {record['date']}",
        f"- log p̂(x) = {-nll:.3f} ± {se:.3f} nats on {summary['num_images']} test images "
        f"(K = {record['num_samples']}); ELBO {summary['elbo']:.3f}; "
        f"k̂ > 0.7 for {summary['share_khat_above_0.7']:.1%}",
        f"- published: {published} ({row.source})",
        *([comparison[1]] if comparison else []),
        *filter(None, [stopping_rule_line(history, config.early_stopping)]),
        "",
        f"![learning curve of row {row.key}]({os.path.relpath(curve, args.results.parent)})",
        "",
        f"![test ELBO of row {row.key} over the second half of its epochs"
        + (f", beside row {beside}'s" if beside else "")
        + f"]({os.path.relpath(late, args.results.parent)})",
        "",
    ])  # fmt: skip
    return line, section


def stopping_rule_line(history: list[dict], patience: int) -> str | None:
    """Where a run under early stopping stands against its rule (``patience`` epochs without
    a better validation ELBO): how much the best validation ELBO rose over the last
    ``patience`` epochs, the curve's slope at the end, and how long ago it last rose; None
    without a validation curve or a rule."""
    valid = [h for h in history if h.get("valid_elbo") is not None]
    if patience <= 0 or not valid:
        return None
    last, best = valid[-1]["epoch"], best_epoch(valid)
    if last - best >= patience:
        return (f"- early stopping: the rule fired at epoch {last}, {patience} epochs after "
                f"the best validation ELBO (epoch {best})")  # fmt: skip
    before = [h["valid_elbo"] for h in valid if h["epoch"] <= last - patience]
    top = max(h["valid_elbo"] for h in valid)
    rise = (
        f"rose {top - max(before):.2f} nats over the last {patience} epochs"
        if before else f"has not yet run {patience} epochs"
    )  # fmt: skip
    return (f"- early stopping ({patience} epochs without a better validation ELBO): not "
            f"reached; the best validation ELBO {rise}, and last rose at epoch {best} of "
            f"{last}")  # fmt: skip


def with_current_reference(row: Row, line: str, section: str) -> tuple[str, str]:
    """A row's table line and section as RESULTS.md last gave them, with the published
    value, the difference from it and the target that ``ROWS`` gives now: a corrected
    reference reaches the rows whose run folders are gone. A difference measured against
    another row, image by image, stays as it was."""
    cells = line.split(" | ")  # configurations hold "|" only without spaces: q(z|x)
    published = "—" if row.published_nll is None else f"{row.published_nll:.2f}"
    difference = cells[-2]
    if "against" not in difference:
        nll = float(cells[-6].split(" ± ")[0])
        difference = "" if row.published_nll is None else f"{nll - row.published_nll:+.2f}"
    cells[-3:] = [published, difference, f"{row.target} |"]
    lines = [
        f"- published: {published} ({row.source})" if text.startswith("- published: ") else text
        for text in section.split("\n")
    ]
    return " | ".join(cells), "\n".join(lines)


def evaluations(run_dir: Path) -> dict[int, Path]:
    """The run's evaluations by the epochs they followed: those kept by
    :func:`keep_evaluation`, and the run folder's latest (which stands for its own copy)."""
    found = {}
    for folder in sorted((run_dir / "evaluations").glob("epoch-*")):
        record = read_record(folder)
        if record is not None:
            found[record["trained_epochs"]] = folder
    latest = read_record(run_dir)
    if latest is not None:
        found[latest["trained_epochs"]] = run_dir
    return found


def against_row(row: Row, args: argparse.Namespace) -> tuple[str, str] | None:
    """The row's NLL minus that of the row it is measured against, image by image on the
    test images both evaluated (``pyro_vae.compare.paired_difference``): the table's cell
    and the section's lines; None where either is not evaluated.

    The cell pairs the row's latest evaluation with the other row's after as many epochs,
    or else after the fewest epochs beyond (the other row trained longer, so the comparison
    leans its way), or else with its latest. The lines add the latest against the latest and
    every earlier pairing at equal epochs, so that none is lost when either row trains on."""
    if row.against is None:
        return None
    mine, other = args.runs_dir / row.key, args.runs_dir / row.against
    own, theirs = evaluations(mine), evaluations(other)
    # The run folders' own evaluations: ``mine`` may hold per-image estimates and no record.
    epochs = next((n for n, folder in own.items() if folder == mine), None)
    their_latest = next((n for n, folder in theirs.items() if folder == other), None)
    beyond = [n for n in sorted(theirs) if epochs is not None and n >= epochs]
    pairs = [(mine, beyond[0] if beyond else their_latest), (mine, their_latest)]
    pairs += [(own[n], n) for n in sorted(set(own) & set(theirs), reverse=True) if n != epochs]
    lines, cell = [], None
    for folder, other_epochs in dict.fromkeys(pairs):  # in order, each pairing once
        paired = None if other_epochs is None else paired_difference(folder, theirs[other_epochs])
        if paired is None:
            continue
        # An earlier pairing is at equal epochs: the other row's count is this row's too.
        earlier = "" if folder == mine else f"after {other_epochs:,} epochs of its own, "
        lines.append(
            f"- {earlier}against row {row.against} ({other_epochs:,} epochs) on the same "
            f"{paired.images:,} test images: NLL {-paired.mean:+.3f} ± "
            f"{paired.standard_error:.3f} nats (mean and standard error of the per-image "
            f"differences); lower on {paired.share_better:.0%} of the images"
        )
        cell = cell or (
            f"{-paired.mean:+.2f} ± {paired.standard_error:.2f} against {row.against} "
            f"after {other_epochs:,} epochs"
        )
    return None if cell is None else (cell, "\n".join(lines))


def _fresh(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments of a first run, for printing the command that started a row."""
    return argparse.Namespace(**{**vars(args), "epochs": None, "data_dir": "../shared/data",
                                 "no_download": True})  # fmt: skip


def save_late_curve(row: Row, history: list[dict], runs_dir: Path, path: Path) -> str | None:
    """The row's test ELBO over the second half of its epochs, and where it is measured
    against another row with a run folder, that row's over the same epochs and the
    difference: whether the row was still improving, and how its lead changes. Returns
    the other row's key where it was drawn."""
    from pyro_vae.plots import save_late_curves

    histories = {row.key: history}
    other = read_history(runs_dir / row.against) if row.against else []
    if other:
        histories[row.against] = other
    title = f"row {row.key}, second half of its epochs (test ELBO, never used to choose)"
    save_late_curves(histories, path, title=title)
    return row.against if other else None


def save_curve(history: list[dict], path: Path, title: str) -> None:
    from pyro_vae.plots import save_curves

    path.parent.mkdir(parents=True, exist_ok=True)
    # From epoch 1: the untrained model's ELBO (epoch 0, some -550) would flatten the rest.
    save_curves([row for row in history if row["epoch"] > 0], path, title=title)


HEADER = """\
# Results: log-likelihood on dynamically binarized MNIST

Written by `python scripts/reproduce_mnist.py` (issue 13); do not edit by hand: the script
rewrites this file from the run folders each time it runs. Training images are binarized
afresh at every pass; the 10,000 test images once, with a fixed seed. log p̂(x) is the
importance-sampled estimate with K = 5000 samples per image, its ± the standard error over
images; NLL = −log p̂(x) in nats, lower is better. The curves show, from epoch 1, the ELBO
per epoch on the training set (the objective it trained, β-weighted during warm-up), the
validation split (rows with early stopping) and the test set (shown, never used to choose
anything), and beside it the ELBO's KL term for the epochs that recorded it.

| row | configuration | epochs | training | NLL ± SE | −ELBO | k̂ > 0.7 | published NLL | difference | target |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
"""  # noqa: E501


def previous_rows(text: str) -> dict[str, tuple[str, str]]:
    """Each row's table line and section as ``text`` (RESULTS.md as last written) gives
    them, for the rows whose run folder is gone: the folders live outside the checkout."""
    for block in marked_sections(text):  # another script's part, kept whole elsewhere
        text = text.replace(block, "")
    titles = {f"| {key} | {row.configuration} |": key for key, row in ROWS.items()}
    lines = {
        titles[title]: line
        for line in text.splitlines()
        for title in titles
        if line.startswith(title + " ")
    }
    sections = {}
    for part in text.split("\n### Row ")[1:]:
        sections[part.split(":", 1)[0]] = f"### Row {part.strip()}\n"
    return {key: (line, sections.get(key, "")) for key, line in lines.items()}


def write_results(args: argparse.Namespace) -> None:
    old = args.results.read_text() if args.results.is_file() else ""
    previous = previous_rows(old)
    lines, sections = zip(*(row_report(row, args, previous) for row in ROWS.values()))
    notes = args.notes.read_text() if args.notes and args.notes.is_file() else ""
    sections = "\n".join(section for section in sections if section)  # none for unrun rows
    text = HEADER + "\n".join(lines) + "\n\n" + notes + "\n## Rows\n\n" + sections
    args.results.write_text("\n\n".join([text.rstrip(), *marked_sections(old)]) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list("ABCDE"), choices=list(ROWS))
    add_run_options(parser, Path.home() / "pyro-vae-runs" / "mnist")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="evaluate only the first N test images (default: all)",
    )
    parser.add_argument(
        "--notes",
        type=Path,
        default=Path("scripts/results/notes.md"),
        help="hand-written discussion placed under the table",
    )
    return parsed(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    rows = [ROWS[key] for key in args.rows]
    if not torch.cuda.is_available() and args.epochs is None:
        for row in [row for row in rows if row.gpu]:
            print(f"row {row.key} needs a GPU (none here): skipped; --epochs N runs it small")
        rows = [row for row in rows if not row.gpu]
    children = run_rows(lambda row, children: run_row(row, args, children), rows, args.jobs)
    write_results(args)
    print(f"wrote {args.results}")
    return EXIT_INTERRUPTED if children.stopping.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
