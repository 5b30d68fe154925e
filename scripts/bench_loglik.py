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

import numpy as np
import torch
from bench_common import add_pair_arguments, load_pair, timings
from torch.nn import functional as F

from pyro_vae.config import TrainConfig
from pyro_vae.importance import DEFAULT_MAX_ELEMENTS, importance_log_likelihood


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
    add_pair_arguments(parser, images=200)
    args = parser.parse_args()

    config = TrainConfig(dataset="mnist", latent_dim=50, hidden_dims=[400])
    model, guide, data, _, device = load_pair(args, config)
    images = data.test[: args.images].float() / 255
    print(f"{images.shape[0]} MNIST test images, K={args.num_samples}, fp32")

    loops = {
        "pyro-vae": lambda: importance_log_likelihood(model, guide, images, args.num_samples),
        "hand-written": lambda: handwritten_log_likelihood(
            model, guide, images, args.num_samples, DEFAULT_MAX_ELEMENTS
        ),
    }
    times, values = timings(loops, args.repeats, device)
    ours = float(np.mean(values["pyro-vae"].log_likelihood))
    theirs = float(values["hand-written"].mean())
    print(f"mean log p̂(x): pyro-vae {ours:.3f}, hand-written {theirs:.3f} nats")
    print()
    print(f"| computation | s (median of {args.repeats}) | images/s | vs hand-written |")
    print("| --- | --- | --- | --- |")
    reference = times["hand-written"]
    for name in loops:
        median = times[name]
        rate = images.shape[0] / median
        print(f"| {name} | {median:.2f} | {rate:.1f} | {reference / median:.2f}x throughput |")


if __name__ == "__main__":
    main()
