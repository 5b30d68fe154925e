"""Throughput of the importance-sampled log-likelihood, K=5000, on MNIST test images.

pyro-vae's ``importance_log_likelihood`` (Pyro traces of the model and guide under a
particle plate, plus IWAE bounds, PSIS k̂ and ESS) beside a hand-written PyTorch computation
of the same estimate for the same network and the same chunking, in one process, taking
turns so machine drift hits both alike. The network is that of Pyro's VAE example
(784-400-50 softplus MLPs); pass ``--run-dir`` to use a trained run's parameters instead of
a fresh initialization (throughput does not depend on the parameter values).

    python scripts/bench_loglik.py --images 200            # CPU: a subset
    python scripts/bench_loglik.py --images 10000          # GPU: the whole test set
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyro
import torch
from torch.nn import functional as F

from pyro_vae import load_run
from pyro_vae.config import TrainConfig
from pyro_vae.data import load_data
from pyro_vae.importance import DEFAULT_MAX_ELEMENTS, importance_log_likelihood
from pyro_vae.registry import build_vae
from pyro_vae.run import resolve_device

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@torch.no_grad()
def handwritten_log_likelihood(model, guide, images, num_samples, max_elements):
    """log p̂(x) per image in plain PyTorch, with the chunk sizes pyro-vae uses."""
    pixels = math.prod(images.shape[1:])
    batch = max(1, min(images.shape[0], max_elements // (num_samples * pixels)))
    chunk = max(1, min(num_samples, max_elements // (batch * pixels)))
    out = []
    for start in range(0, images.shape[0], batch):
        x = images[start : start + batch]
        hidden = guide.encoder(x)
        loc, scale = guide.loc(hidden), F.softplus(guide.scale(hidden)) + 1e-6
        half_log_2pi = 0.5 * math.log(2 * math.pi) * loc.shape[-1]
        log_w = []
        for k0 in range(0, num_samples, chunk):
            eps = torch.randn(min(chunk, num_samples - k0), *loc.shape, device=x.device)
            z = loc + scale * eps
            logits = model.decoder(z)
            log_px = (
                -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
                .flatten(-3)
                .sum(-1)
            )
            log_pz = -0.5 * z.pow(2).sum(-1) - half_log_2pi
            log_qz = (-0.5 * eps.pow(2) - scale.log()).sum(-1) - half_log_2pi
            log_w.append(log_px + log_pz - log_qz)
        out.append(torch.logsumexp(torch.cat(log_w), 0) - math.log(num_samples))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--run-dir", default=None, help="a trained MNIST run (optional)")
    parser.add_argument("--images", type=int, default=200, help="first N test images")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.run_dir:
        run = load_run(args.run_dir, device=str(device))
        model, guide, data = run.model, run.guide, run.data
    else:
        config = TrainConfig(dataset="mnist", latent_dim=50, hidden_dims=[400])
        data = load_data("mnist", "dynamic", device, args.data_dir, download=False)
        pyro.set_rng_seed(0)
        model, guide = (m.to(device) for m in build_vae(config, data.image_shape))
    images = data.test[: args.images].float() / 255
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}")
    print(f"device: {device} ({name}), torch threads: {torch.get_num_threads()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, pyro {pyro.__version__}")
    print(f"{images.shape[0]} MNIST test images, K={args.num_samples}, fp32")

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, result

    loops = {
        "pyro-vae": lambda: importance_log_likelihood(model, guide, images, args.num_samples),
        "hand-written": lambda: handwritten_log_likelihood(
            model, guide, images, args.num_samples, DEFAULT_MAX_ELEMENTS
        ),
    }
    times = {name: [] for name in loops}
    values = {}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not timed
        for name, fn in loops.items():
            seconds, values[name] = timed(fn)
            if repeat > 0:
                times[name].append(seconds)
    ours = float(np.mean(values["pyro-vae"].log_likelihood))
    theirs = float(values["hand-written"].mean())
    print(f"mean log p̂(x): pyro-vae {ours:.3f}, hand-written {theirs:.3f} nats")
    print()
    print(f"| computation | s (median of {args.repeats}) | images/s | vs hand-written |")
    print("| --- | --- | --- | --- |")
    reference = statistics.median(times["hand-written"])
    for name in loops:
        median = statistics.median(times[name])
        rate = images.shape[0] / median
        print(f"| {name} | {median:.2f} | {rate:.1f} | {reference / median:.2f}x throughput |")


if __name__ == "__main__":
    main()
