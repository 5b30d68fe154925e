"""Training steps of trained runs with subnormal floats kept (IEEE) and flushed to zero.

A trained network makes values below 1.2e-38 (fp32's smallest normal number) in its tails:
softplus and sigmoid far below zero, their gradients. x86 CPUs process each such operand
in microcode, many times slower than a normal one. ``pyro-vae train`` and the CLI flush
them to zero (``pyro_vae.run.flushed_denormals``); this script measures what that saves.

For each run folder: its model and guide as trained (``load_run``), the loss that ``pyro-vae
train`` builds for it (JIT-traced where it traces), and batches of its training data; the
timed work is the loss and its gradients, ``--steps`` steps per round, rounds alternating
between the two settings in one process. Torch runs one thread here, so that switching
the mode on the main thread switches it for all the work (threads started later inherit the
mode; a running pool's threads keep theirs).

    python scripts/bench_denormals.py ~/pyro-vae-runs/m2/m2-100 ~/pyro-vae-runs/mnist/B
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pyro
import torch
from bench_common import print_header
from torch import nn

from pyro_vae.compiled import training_loss
from pyro_vae.registry import make_elbo
from pyro_vae.run import load_run
from pyro_vae.semisupervised import training_batches


def step_timer(run_dir: Path, steps: int):
    """The run's name, epoch and a function timing ``steps`` loss-and-gradient steps (ms each)."""
    run = load_run(run_dir, device="cpu", checkpoint="last")
    model, guide, data, config = run.model.train(), run.guide.train(), run.data, run.config
    named = list(nn.ModuleDict({"model": model, "guide": guide}).named_parameters())
    source = training_batches(config, data, model, guide)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(source.size, generator=generator).split(config.batch_size)
    batches = [source.batch(i, generator, generator, lambda t: t) for i in order[:steps]]
    objective = make_elbo(config, data.train.shape[0])
    with pyro.validation_enabled(False):
        loss_fn, mode = training_loss(objective, model, guide, batches[0], named, config.compile)

    def milliseconds_per_step() -> float:
        with pyro.validation_enabled(False):
            start = time.perf_counter()
            for batch in batches:
                loss_fn(*batch).backward()
            return 1000 * (time.perf_counter() - start) / len(batches)

    label = f"{run_dir.name} ({config.model}, {config.elbo}, batch {config.batch_size}, {mode})"
    return label, run.history[-1]["epoch"], milliseconds_per_step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.run_dirs = [run_dir.expanduser() for run_dir in args.run_dirs]
    for run_dir in args.run_dirs:
        if not (run_dir / "checkpoint.pt").is_file():
            parser.error(f"{run_dir} is not a trained run folder (no checkpoint.pt)")
    torch.set_num_threads(1)
    torch.set_flush_denormal(False)
    print_header(torch.device("cpu"))
    print(f"{args.rounds} rounds of {args.steps} loss-and-gradient steps per setting, median\n")
    print("| run | epochs trained | ms per step, IEEE | ms per step, flushed | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for run_dir in args.run_dirs:
        pyro.clear_param_store()  # each run's trace is made with its own parameters alone
        label, epochs, timed = step_timer(run_dir, args.steps)
        timed()  # warm-up: the trace, allocations
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for flush in (False, True):
                torch.set_flush_denormal(flush)
                times[flush].append(timed())
        kept, flushed = (statistics.median(times[flush]) for flush in (False, True))
        print(f"| {label} | {epochs} | {kept:.1f} | {flushed:.1f} | {kept / flushed:.2f}× |")


if __name__ == "__main__":
    main()
