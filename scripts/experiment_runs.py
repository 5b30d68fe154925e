"""What the experiment scripts here share: rows trained as resumable ``pyro-vae train``
child processes, a few at a time, each for a bounded number of minutes (a stop request
reaches every child, which checkpoints), their common options, and the marked sections of
RESULTS.md that each script rewrites on its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pyro
import torch

from pyro_vae.cli import build_parser, train_config_from_args
from pyro_vae.config import differing_fields
from pyro_vae.run import read_config, read_history
from pyro_vae.schedules import patience_exhausted

EXIT_INTERRUPTED = 130  # pyro-vae train after a stop request: checkpoint written
# Fields a run may hold otherwise than its row's command without being another experiment:
# where and how long it ran.
BOOKKEEPING = ("data_dir", "download", "epochs", "labels", "device", "compile",
               "checkpoint_every", "checkpoint_minutes", "tensorboard")  # fmt: skip


def python_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyro_vae", *args]


def config_changes(command: list[str], run_dir: Path) -> list[str]:
    """``field: commanded -> trained`` for each field, bookkeeping aside, in which the run in
    ``run_dir`` differs from the config that ``command`` (``pyro-vae train`` with a row's
    flags) starts: a row's flags changed after its run began."""
    commanded = train_config_from_args(build_parser().parse_args(command[3:]))
    return differing_fields(commanded, read_config(run_dir), ignore=BOOKKEEPING)


def training_finished(run_dir: Path, epochs: int | None = None) -> bool:
    """The run has trained all its epochs (``epochs`` where given, else its own), or early
    stopping ended it."""
    if not (run_dir / "checkpoint.pt").is_file():
        return False
    config, history = read_config(run_dir), read_history(run_dir)
    return history[-1]["epoch"] >= (epochs or config.epochs) or (
        config.early_stopping > 0 and patience_exhausted(history, config.early_stopping)
    )


def training_seconds(history: list[dict]) -> float:
    """Seconds a run spent training: its epochs' times, past the untrained epoch 0."""
    return sum(row["seconds"] or 0.0 for row in history[1:])


class Children:
    """The subprocesses running now, so that a stop request reaches each (they checkpoint)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.stopping = threading.Event()

    def run(self, command: list[str], log: Path, minutes: float | None, threads: int) -> int:
        """``command`` on ``threads`` threads, its output appended to ``log``, stopped (and
        checkpointed) after ``minutes`` where given; its exit code."""
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
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

    def train(
        self, command: list[str], run_dir: Path, log: Path, args: argparse.Namespace
    ) -> int | None:
        """Train the run in ``run_dir`` by ``command`` for up to ``--max-minutes`` on
        ``--threads`` threads, unless it has trained its epochs or stopped early. The exit code
        where training failed; None where it trained, was stopped (it checkpoints; the next
        invocation continues it) or had nothing left to do."""
        if args.max_minutes <= 0 or training_finished(run_dir, args.epochs):
            return None
        code = self.run(command, log, args.max_minutes, args.threads)
        return None if code in (0, EXIT_INTERRUPTED) else code

    def stop(self, signum=None, frame=None) -> None:
        with self.lock:
            self.stopping.set()
            for child in self.running:
                child.terminate()


def environment() -> dict:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {
        "device": f"{device} ({os.cpu_count()} CPU cores, {platform.machine()})",
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, "
        f"pyro-ppl {pyro.__version__}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def shell_line(command: list[str]) -> str:
    return " ".join(["pyro-vae", *command[3:]])


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section between ``name``'s markers replaced by ``body`` (appended,
    with its markers, where there is none): how semisupervised_mnist.py keeps its part of
    RESULTS.md, which reproduce_mnist.py rewrites around it (:func:`marked_sections`)."""
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1].lstrip("\n")
    return text.rstrip() + ("\n\n" if text.strip() else "") + block


def has_section(text: str, name: str) -> bool:
    """Whether ``text`` holds ``name``'s marked section (:func:`replace_section`)."""
    begin, end = _markers(name)
    return begin in text and end in text


def section_body(text: str, name: str) -> str:
    """What ``text`` holds between ``name``'s markers ("" where it has no such section)."""
    begin, end = _markers(name)
    return text.split(begin, 1)[1].split(end, 1)[0] if has_section(text, name) else ""


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
        "--threads",
        type=int,
        default=None,
        help="torch threads of each row (default: the CPU cores divided by --jobs); give 1 "
        "where other runs share the machine: OpenMP threads beyond the free cores spin, and "
        "a row's steps then take many times longer",
    )
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
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    elif args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
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
