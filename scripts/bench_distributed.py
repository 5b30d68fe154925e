"""Data-parallel training throughput: images/s of `pyro-vae train` on 1 and 2 processes.

Each configuration is the real training loop (``pyro_vae.trainer``) on MNIST (50,000
training images, dynamic binarization, 784-400-20 MLP VAE, JIT Trace_ELBO, fused Adam,
global batch 256): `pyro-vae train` for one process, `torchrun --nproc-per-node N -m
pyro_vae train` for N. Throughput is the training images over the seconds of the timed
epochs that metrics.jsonl records (the first epoch, with its tracing, is left out; the
per-epoch evaluation is not counted). The configurations run one after another from this
one script, taking turns round by round so machine drift hits them alike.

On the CPU, one process with 2 threads and two processes with 1 thread each use the same
two cores; the scaling efficiency is images/s per core used over one process's on one
core (per GPU over one GPU's). What limits it: each step all-reduces every
gradient (the MLP's ~0.65 M parameters, 2.6 MB) and the loss; the script times that
all-reduce on its own too (`--allreduce`).

    python scripts/bench_distributed.py --data-dir ../shared/data --epochs 3 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pyro
import torch
from bench_common import DEFAULT_DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN = 50_000
MODEL_FLAGS = ["--dataset", "mnist", "--hidden-dims", "400", "--latent-dim", "20"]


def train_command(processes: int, device: str, args, out: Path) -> list[str]:
    flags = [
        *MODEL_FLAGS, "--data-dir", args.data_dir, "--no-download", "--batch-size", "256",
        "--epochs", str(args.epochs + 1), "--device", device, "--quiet", "--out", str(out),
        "--eval-batch-size", "5000", "--checkpoint-every", "1000",
    ]  # fmt: skip
    if processes == 1:
        return [sys.executable, "-m", "pyro_vae", "train", *flags]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, f"--nproc-per-node={processes}", "-m", "pyro_vae", "train", *flags]


def images_per_second(command: list[str], threads: int, out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = [row["seconds"] for row in rows[2:]]  # epoch 0 is untrained, epoch 1 traces
    return N_TRAIN * len(seconds) / sum(seconds)


def allreduce_worker() -> None:
    """Under torchrun: the seconds of one all-reduce of the MLP's gradient, as DDP sends it."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    numel = (784 * 400 + 400 + 400 * 40 + 40) + (20 * 400 + 400 + 400 * 784 + 784)
    grad = torch.randn(numel)
    for _ in range(10):
        dist.all_reduce(grad)
    start = time.perf_counter()
    for _ in range(100):
        dist.all_reduce(grad)
    if dist.get_rank() == 0:
        print(json.dumps({"parameters": numel, "seconds": (time.perf_counter() - start) / 100}))
    dist.destroy_process_group()


def time_allreduce(processes: int) -> dict:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={processes}", __file__, "--allreduce-worker",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each configuration")
    parser.add_argument("--allreduce-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allreduce_worker:
        allreduce_worker()
        return

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cores = os.cpu_count() or 1
    # (name, processes, threads per process, device)
    configurations = [
        ("1 process x 2 threads (cpu)", 1, 2, "cpu"),
        ("1 process x 1 thread (cpu)", 1, 1, "cpu"),
        ("2 processes x 1 thread (cpu, gloo)", 2, 1, "cpu"),
    ]
    configurations += [(f"{n} GPU(s) (nccl)", n, 1, "cuda") for n in (1, 2, 4, 8) if n <= gpus]

    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}")
    print(f"host: {platform.machine()}, {cores} CPU cores, {gpus} GPU(s)")
    print(f"python {platform.python_version()}, torch {torch.__version__}, pyro {pyro.__version__}")
    print(
        f"MNIST, {N_TRAIN} training images, global batch 256, {args.epochs} timed epochs, "
        f"{args.rounds} rounds"
    )
    results: dict[str, list[float]] = {name: [] for name, *_ in configurations}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, processes, threads, device in configurations:
                out = Path(tmp) / f"{round_}-{len(results[name])}-{processes}-{threads}-{device}"
                command = train_command(processes, device, args, out)
                results[name].append(images_per_second(command, threads, out))
                print(f"  round {round_ + 1}: {name}: {results[name][-1]:,.0f} images/s")

    print("\n| configuration | images/s (median) | efficiency per core or GPU |")
    print("| --- | --- | --- |")
    median = {name: statistics.median(values) for name, values in results.items()}
    for name, processes, threads, device in configurations:
        base = {
            "cpu": median["1 process x 1 thread (cpu)"],
            "cuda": median.get("1 GPU(s) (nccl)", float("nan")),
        }[device]
        efficiency = median[name] / ((processes * threads if device == "cpu" else processes) * base)
        print(f"| {name} | {median[name]:,.0f} | {efficiency:.0%} |")
    reduce = time_allreduce(2)
    print(
        f"\none gloo all-reduce of {reduce['parameters']:,} fp32 gradients between 2 processes: "
        f"{reduce['seconds'] * 1e3:.2f} ms (a step: 196 per epoch)"
    )


if __name__ == "__main__":
    main()
