"""What the benchmarks share: the header they print and where the shared MNIST copy is;
for the log-likelihood benchmarks also their command-line arguments, the pair they time (a
fresh one of a given configuration, or a trained run's), and the timing of computations
that take turns in one process."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pyro
import torch

from pyro_vae import load_run
from pyro_vae.config import TrainConfig
from pyro_vae.data import ImageData, load_data
from pyro_vae.registry import build_vae
from pyro_vae.run import resolve_device

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def add_pair_arguments(parser: argparse.ArgumentParser, images: int) -> None:
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--run-dir", default=None, help="a trained MNIST run (optional)")
    parser.add_argument("--images", type=int, default=images, help="first N test images")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")


def load_pair(args: argparse.Namespace, config: TrainConfig):
    """(model, guide, data, config, device): the run of ``--run-dir``, else ``config``'s pair
    freshly initialized (seed 0) on MNIST; the header lines printed."""
    device = resolve_device(args.device)
    if args.run_dir:
        run = load_run(args.run_dir, device=str(device))
        model, guide, data, config = run.model, run.guide, run.data, run.config
    else:
        data: ImageData = load_data("mnist", "dynamic", device, args.data_dir, download=False)
        pyro.set_rng_seed(0)
        model, guide = (m.to(device) for m in build_vae(config, data.image_shape))
    print_header(device)
    return model, guide, data, config, device


def print_header(device: torch.device) -> None:
    """The date, the device (the GPU's name, or the CPU's architecture) with torch's thread
    count, and the versions: the lines every benchmark's output begins with."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}")
    print(f"device: {device} ({name}), torch threads: {torch.get_num_threads()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, pyro {pyro.__version__}")


def timings(
    computations: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds of each computation over ``repeats`` rounds, taking turns (a first
    round warms up and is not timed), and each one's last result."""
    times: dict[str, list[float]] = {name: [] for name in computations}
    results: dict[str, object] = {}
    for repeat in range(repeats + 1):
        for name, compute in computations.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            results[name] = compute()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if repeat > 0:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}, results
