"""Training throughput and peak memory of the MLP VAE and of the registry's largest models.

Each model trains for ``--steps`` timed steps (after ``--warmup`` untimed ones) the way
``pyro-vae train`` does (pyro_vae.compiled.training_loss, fused Adam, the finiteness check)
on dynamically binarized MNIST, then scores ``--eval-images`` test images with the K-sample
log-likelihood estimate. Each model runs in a fresh process of its own, so that its peak
memory is its own: on a GPU the peak of allocated device memory, on the CPU the peak
resident set of the process (data, libraries and all; the "before" column is the resident
set once data and model are loaded, before the first step).

    python scripts/bench_models.py --data-dir ../shared/data
    python scripts/bench_models.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import pyro
import torch
from bench_common import DEFAULT_DATA_DIR, print_header
from torch import nn

from pyro_vae.compiled import training_loss
from pyro_vae.config import TrainConfig
from pyro_vae.data import load_data
from pyro_vae.importance import importance_log_likelihood
from pyro_vae.registry import build_vae, make_elbo
from pyro_vae.run import resolve_device
from pyro_vae.svi import adam, svi_step

BASE = dict(dataset="mnist", batch_size=256, lr=1e-3, elbo="trace")
MODELS = {
    # The network of Pyro's examples/vae/vae.py.
    "mlp": dict(latent_dim=50, hidden_dims=[400]),
    # Convolutional encoder and decoder with residual blocks.
    "conv": dict(latent_dim=50, hidden_dims=[400], encoder="conv", decoder="conv"),
    # Two stochastic layers, conv networks, a VampPrior with 50 pseudo-inputs on top.
    "conv-hvae-vamp": dict(
        model="hvae",
        latent_dim=50,
        top_latent_dim=20,
        hidden_dims=[400],
        encoder="conv",
        decoder="conv",
        prior="vamp",
        prior_components=50,
    ),
}


def resident_mib() -> float:
    """Peak resident set of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    config = TrainConfig(**BASE, **MODELS[name], compile=args.compile, precision=args.precision)
    pyro.set_rng_seed(0)
    data = load_data("mnist", "dynamic", device, args.data_dir, download=False)
    model, guide = build_vae(config, data.image_shape)
    model, guide = model.to(device), guide.to(device)
    named = list(nn.ModuleDict({"model": model, "guide": guide}).named_parameters())
    generator = torch.Generator(device=device).manual_seed(0)
    batches = torch.randperm(data.train.shape[0], generator=generator, device=device).split(256)
    first = data.train_batch(batches[0], generator)
    with pyro.validation_enabled(False):
        loss_fn, mode = training_loss(make_elbo(config), model, guide, first, named, args.compile)
    optimizer = adam([p for _, p in named], config.lr)
    before = resident_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def steps(indices) -> None:
        for index in indices:
            loss, taken = svi_step(loss_fn, optimizer, data.train_batch(index, generator))
            assert taken, "non-finite step"

    with pyro.validation_enabled(False):
        steps(batches[: args.warmup])
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        steps(batches[args.warmup : args.warmup + args.steps])
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - start
        train_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        images = data.test[: args.eval_images].float().div(255).round()
        importance_log_likelihood(model, guide, images[:1], 10)  # first-call costs (arviz)
        start = time.perf_counter()
        importance_log_likelihood(model, guide, images, args.num_samples)
        if device.type == "cuda":
            torch.cuda.synchronize()
        eval_seconds = time.perf_counter() - start
    return {
        "model": name,
        "parameters": sum(p.numel() for _, p in named),
        "compile": mode,
        "train_images_per_s": args.steps * 256 / train_seconds,
        "eval_images_per_s": args.eval_images / eval_seconds,
        "resident_before_mib": before,
        "resident_peak_mib": resident_mib(),
        "train_peak_gpu_mib": train_peak / 2**20 if train_peak is not None else None,
        "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=40, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--eval-images", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=5000, help="K of the estimate")
    parser.add_argument("--compile", default="jit", choices=["jit", "eager"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one model, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return

    device = resolve_device(args.device)
    print_header(device)
    print(
        f"batch 256, {args.steps} timed steps after {args.warmup}; log-likelihood K="
        f"{args.num_samples} on {args.eval_images} test images; --compile {args.compile} "
        f"--precision {args.precision}"
    )
    rows = []
    for model in args.models:
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "models"]
        command = [sys.executable, __file__, *[f for f in flags if not f.startswith("--one")]]
        out = subprocess.run(
            [*command, "--one", model], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            sys.exit(f"{model} failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

    print()
    memory = (
        "peak GPU memory, training / with evaluation"
        if device.type == "cuda"
        else ("resident set before / peak")
    )
    print(f"| model | parameters | loss | train images/s | log p̂ images/s | {memory} |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        if row["peak_gpu_mib"] is not None:
            mem = f"{row['train_peak_gpu_mib']:,.0f} / {row['peak_gpu_mib']:,.0f} MiB"
        else:
            mem = f"{row['resident_before_mib']:,.0f} / {row['resident_peak_mib']:,.0f} MiB"
        print(
            f"| {row['model']} | {row['parameters']:,} | {row['compile']} "
            f"| {row['train_images_per_s']:,.0f} | {row['eval_images_per_s']:.1f} | {mem} |"
        )


if __name__ == "__main__":
    main()
