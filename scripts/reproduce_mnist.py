"""Reproduce published log-likelihoods on dynamically binarized MNIST, and write RESULTS.md.

Each row of ``ROWS`` is one configuration of a paper, trained with ``pyro-vae train`` in a
run folder of its own under ``--runs-dir`` (keep it outside the checkout), then scored with
``pyro-vae evaluate``: log p̂(x) with K = 5000 importance samples on all 10,000 test images
(binarized once with a fixed seed, ``pyro_vae.data``), mean ± standard error, the ELBO, and
the share of images whose PSIS k̂ exceeds 0.7. A row whose training is cut short by
``--max-minutes`` keeps its checkpoint; the next invocation continues it from there
(bit for bit on the CPU) and evaluates it again. RESULTS.md is rewritten from whatever the
run folders hold, each row's learning curve written as an image beside it.

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
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyro
import torch

from pyro_vae.run import read_config, read_history
from pyro_vae.schedules import patience_exhausted

EXIT_INTERRUPTED = 130  # pyro-vae train after a stop request: checkpoint written


@dataclass(frozen=True)
class Row:
    key: str
    configuration: str
    flags: tuple[str, ...]
    published_nll: float | None
    source: str  # where the published number is printed, and how it was obtained
    target: str
    gpu: bool = False


# Burda et al. (2016), section 5: 784-200-200-50 with tanh, Bernoulli output, Adam with
# batches of 20 on all 60,000 training images (no validation split), 3^i epochs at
# 1e-3·10^(-i/7) for i = 0..7 (3,280 epochs), dynamic binarization, NLL with k = 5000.
IWAE_PAPER = (
    "--latent-dim", "50", "--hidden-dims", "200", "200", "--activation", "tanh",
    "--valid-size", "0", "--batch-size", "20", "--lr", "0.001", "--lr-schedule", "burda",
    "--epochs", "3280",
)  # fmt: skip
# Tomczak & Welling (2018), section 4 and their code's defaults (experiment.py): 40 latent
# units, two gated dense layers of 300, 500 pseudo-inputs, Adam 5e-4, batches of 100,
# KL warm-up over 100 epochs, early stopping after 50 epochs on a 10,000-image validation
# split, at most 2,000 epochs; NLL with 5,000 importance samples.
VAMP_PAPER = (
    "--encoder", "gated-mlp", "--decoder", "gated-mlp", "--hidden-dims", "300", "300",
    "--latent-dim", "40", "--prior", "vamp", "--prior-components", "500", "--lr", "0.0005",
    "--batch-size", "100", "--kl-warmup-epochs", "100", "--early-stopping", "50",
    "--epochs", "2000",
)  # fmt: skip
BURDA = "Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Table 1"
VAMP = "Tomczak & Welling, VAE with a VampPrior, AISTATS 2018, Table 2 (dynamic MNIST)"

ROWS = {
    row.key: row
    for row in (
        Row("A", "VAE: 1 stochastic layer (50), 2×200 tanh, k=1", (*IWAE_PAPER, "--elbo", "trace"),
            86.76, f"{BURDA}, VAE k=1", "≤ 87.0"),
        Row("B", "IWAE k=5, same network", (*IWAE_PAPER, "--elbo", "iwae", "--num-particles", "5"),
            85.54, f"{BURDA}, IWAE k=5", "≤ 85.8"),
        Row("C", "IWAE k=5 with DReG gradients, same network",
            (*IWAE_PAPER, "--elbo", "iwae-dreg", "--num-particles", "5"),
            None, "no published number (Tucker et al. 2019 report other networks)", "below B"),
        Row("D", "VampPrior (500 pseudo-inputs), 1 stochastic layer (40), 2×300 gated MLP",
            VAMP_PAPER, 85.57, f"{VAMP}, VAE (L=1) + VampPrior", "within 0.5 nats"),
        Row("E", "two-layer HVAE (40+40) + VampPrior, 2×300 gated MLP",
            ("--model", "hvae", "--top-latent-dim", "40", *VAMP_PAPER),
            83.19, f"{VAMP}, HVAE (L=2) + VampPrior", "within 0.5 nats"),
        Row("F1", "IWAE k=50, the network of A",
            (*IWAE_PAPER, "--elbo", "iwae", "--num-particles", "50"),
            84.78, f"{BURDA}, IWAE k=50", "≤ 85.0", gpu=True),
        # The flow is on z1 only: the VampPrior's components are the top guide q(z2 | u_k),
        # and under an IAF their density needs its sequential inverse for every component.
        Row("F2", "conv HVAE (40+40) + VampPrior, IAF guide on z1",
            ("--model", "hvae", "--top-latent-dim", "40", "--encoder", "conv", "--decoder",
             "conv", "--guide", "iaf", "--top-guide", "diag-normal", "--latent-dim", "40",
             "--prior", "vamp",
             "--prior-components", "500", "--lr", "0.0005", "--batch-size", "100",
             "--kl-warmup-epochs", "100", "--early-stopping", "50", "--epochs", "2000"),
            81.09, f"{VAMP}, convHVAE (L=2) + VampPrior (no flow guide there)",
            "within 0.5 nats", gpu=True),
    )
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Running one row: train until done or out of minutes, then evaluate what it holds


def python_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyro_vae", *args]


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


def training_finished(run_dir: Path, epochs: int | None = None) -> bool:
    """The run has trained all its epochs (``epochs`` where given, else its own), or early
    stopping ended it."""
    if not (run_dir / "checkpoint.pt").is_file():
        return False
    config, history = read_config(run_dir), read_history(run_dir)
    return history[-1]["epoch"] >= (epochs or config.epochs) or (
        config.early_stopping > 0 and patience_exhausted(history, config.early_stopping)
    )


class Children:
    """The subprocesses running now, so that a stop request reaches each (they checkpoint)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.stopping = threading.Event()

    def run(self, command: list[str], log: Path, minutes: float | None, env: dict) -> int:
        with log.open("a") as out:
            out.write(f"\n$ {' '.join(command)}\n")
            out.flush()
            with self.lock:
                if self.stopping.is_set():
                    return EXIT_INTERRUPTED
                # A session of its own: a Ctrl-C reaches this script alone, which then
                # sends SIGTERM (checkpoint and exit) rather than a second, abrupt SIGINT.
                child = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
                self.running.add(child)
            try:
                # SIGTERM makes pyro-vae train write a checkpoint and exit with 130.
                child.wait(timeout=None if minutes is None else minutes * 60)
            except subprocess.TimeoutExpired:
                child.terminate()
                child.wait()
            finally:
                with self.lock:
                    self.running.discard(child)
            return child.returncode

    def stop(self, signum=None, frame=None) -> None:
        with self.lock:
            self.stopping.set()
            for child in self.running:
                child.terminate()


def run_row(row: Row, args: argparse.Namespace, children: Children) -> str:
    """Train the row for up to ``--max-minutes``, then evaluate it if its parameters changed."""
    run_dir = args.runs_dir / row.key
    log = args.runs_dir / f"{row.key}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if args.max_minutes > 0 and not training_finished(run_dir, args.epochs):
        code = children.run(train_command(row, run_dir, args), log, args.max_minutes, env)
        if code not in (0, EXIT_INTERRUPTED):
            return f"row {row.key}: training failed (exit {code}); see {log}"
    if children.stopping.is_set():
        return f"row {row.key}: stopped; the next invocation continues it"
    if not (run_dir / "checkpoint.pt").is_file():
        return f"row {row.key}: nothing to evaluate"
    trained = read_history(run_dir)[-1]["epoch"]
    wanted = {"trained_epochs": trained, "num_samples": args.num_samples,
              "max_images": args.max_images}  # fmt: skip
    record = run_dir / "reproduce.json"
    if record.is_file() and _subset(wanted, json.loads(record.read_text())):
        return f"row {row.key}: evaluation of epoch {trained} is current"
    command = python_command("evaluate", str(run_dir), "--num-samples", str(args.num_samples))
    if args.max_images is not None:
        command += ["--max-images", str(args.max_images)]
    started = time.perf_counter()
    code = children.run([*command, "--quiet"], log, None, env)
    if code != 0:
        return f"row {row.key}: evaluation failed (exit {code}); see {log}"
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    record.write_text(json.dumps({
        **wanted, "evaluation_seconds": time.perf_counter() - started,
        "parameters_from": _parameters_line(log), "evaluation": evaluation, **environment(),
    }, indent=2) + "\n")  # fmt: skip
    return f"row {row.key}: evaluated epoch {trained}"


def _subset(wanted: dict, record: dict) -> bool:
    return all(record.get(key) == value for key, value in wanted.items())


def _parameters_line(log: Path) -> str:
    """What ``pyro-vae evaluate`` said it loaded ("epoch N, best validation ELBO", say)."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("parameters: ")]
    return lines[-1].removeprefix("parameters: ") if lines else ""


def environment() -> dict:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {
        "device": f"{device} ({os.cpu_count()} CPU cores, {platform.machine()})",
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, "
        f"pyro-ppl {pyro.__version__}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---------------------------------------------------------------------------------------------
# RESULTS.md


def shell_line(command: list[str]) -> str:
    return " ".join(["pyro-vae", *command[3:]])


def row_report(row: Row, args: argparse.Namespace) -> tuple[str, str]:
    """The row's line of the summary table, and its section with the details."""
    run_dir = args.runs_dir / row.key
    title = f"| {row.key} | {row.configuration} |"
    published = "—" if row.published_nll is None else f"{row.published_nll:.2f}"
    if not (run_dir / "reproduce.json").is_file():
        status = "not run: needs a GPU" if row.gpu else "not run yet"
        if (run_dir / "checkpoint.pt").is_file():
            status = f"{read_history(run_dir)[-1]['epoch']}, not evaluated yet"
        return f"{title} {status} | | | | | {published} | | {row.target} |", ""
    record = json.loads((run_dir / "reproduce.json").read_text())
    summary, config = record["evaluation"], read_config(run_dir)
    history = read_history(run_dir)
    nll, se = -summary["log_likelihood"], summary["standard_error"] or 0.0
    seconds = sum(r["seconds"] or 0.0 for r in history[1:])
    epochs = f"{record['trained_epochs']} of {config.epochs}"
    if training_finished(run_dir) and record["trained_epochs"] < config.epochs:
        epochs += " (early stop)"
    difference = "" if row.published_nll is None else f"{nll - row.published_nll:+.2f}"
    images = summary["num_images"]
    subset = f" (first {images:,} test images)" if record["max_images"] else ""
    line = (
        f"{title} {epochs} | {seconds / 3600:.2f} h | {nll:.2f} ± {se:.2f}{subset} | "
        f"{-summary['elbo']:.2f} | {summary['share_khat_above_0.7']:.1%} | {published} | "
        f"{difference} | {row.target} |"
    )
    curve = args.figures_dir / f"mnist-{row.key}.png"
    save_curve(history, curve, f"row {row.key}: {row.configuration}")
    flags = train_command(row, Path("RUN"), _fresh(args))
    section = "\n".join([
        f"### Row {row.key}: {row.configuration}",
        "",
        f"- command: `{shell_line(flags)}`, then "
        f"`pyro-vae evaluate RUN --num-samples {record['num_samples']}`"
        + (f" `--max-images {record['max_images']}`" if record["max_images"] else ""),
        f"- epochs: {epochs}; training {seconds:.0f} s; evaluation "
        f"{record['evaluation_seconds']:.0f} s; parameters: {record['parameters_from']}",
        f"- device: {record['device']}; {record['versions']}; evaluated {record['date']}",
        f"- log p̂(x) = {-nll:.3f} ± {se:.3f} nats on {summary['num_images']} test images "
        f"(K = {record['num_samples']}); ELBO {summary['elbo']:.3f}; "
        f"k̂ > 0.7 for {summary['share_khat_above_0.7']:.1%}",
        f"- published: {published} ({row.source})",
        "",
        f"![learning curve of row {row.key}]({os.path.relpath(curve, args.results.parent)})",
        "",
    ])  # fmt: skip
    return line, section


def _fresh(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments of a first run, for printing the command that started a row."""
    return argparse.Namespace(**{**vars(args), "epochs": None, "data_dir": "../shared/data",
                                 "no_download": True})  # fmt: skip


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


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section between ``name``'s markers replaced by ``body`` (appended,
    with its markers, where there is none): how another script (semisupervised_mnist.py)
    keeps its part of RESULTS.md, which this one rewrites."""
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1].lstrip("\n")
    return text.rstrip() + ("\n\n" if text.strip() else "") + block


def marked_sections(text: str) -> list[str]:
    """The marked sections of ``text`` (:func:`replace_section`), markers included."""
    blocks = []
    while "<!-- " in text and ": begin -->" in text:
        start = text.index("<!-- ")
        name = text[start + 5 : text.index(": begin -->", start)]
        begin, end = _markers(name)
        if begin not in text or end not in text:
            break
        block = begin + text.split(begin, 1)[1].split(end, 1)[0] + end
        blocks.append(block)
        text = text.split(end, 1)[1]
    return blocks


def write_results(args: argparse.Namespace) -> None:
    lines, sections = zip(*(row_report(row, args) for row in ROWS.values()))
    notes = args.notes.read_text() if args.notes and args.notes.is_file() else ""
    text = HEADER + "\n".join(lines) + "\n\n" + notes + "\n## Rows\n\n" + "\n".join(sections)
    kept = marked_sections(args.results.read_text()) if args.results.is_file() else []
    args.results.write_text("\n\n".join([text.rstrip(), *kept]) + "\n")


# ---------------------------------------------------------------------------------------------


def add_run_options(parser: argparse.ArgumentParser, runs_dir: Path) -> None:
    """The options of every experiment script here: where the run folders and the data lie,
    how long and how many rows train at once, and where the results go."""
    parser.add_argument("--runs-dir", type=Path, default=runs_dir)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--no-download", action="store_true")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=60.0,
        help="training minutes per row in this invocation (0: only evaluate and report)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="rows trained at once")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="cap every row's epochs (a small-scale check of the commands)",
    )
    parser.add_argument(
        "--dataset",
        default="mnist",
        help="another data set for a small-scale check (default: mnist)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=Path("RESULTS.md"))
    parser.add_argument("--figures-dir", type=Path, default=Path("scripts/results"))


def parsed(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments, with the run folder resolved and each job's share of the cores."""
    args = parser.parse_args(argv)
    args.runs_dir = args.runs_dir.expanduser().resolve()
    args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    return args


def run_rows(work: Callable[[object, Children], str], rows: list, jobs: int) -> Children:
    """``work(row, children)`` for every row, ``jobs`` at a time, printing what each says;
    SIGTERM or SIGINT stops the children, which checkpoint. Returns the children."""
    children = Children()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, children.stop)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for message in pool.map(lambda row: work(row, children), rows):
            print(message, flush=True)
    return children


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
