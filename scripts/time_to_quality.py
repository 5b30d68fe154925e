"""Time to quality on dynamically binarized MNIST, and what bf16 does to log p(x).

Trains the network of Pyro's VAE example (784-400-50 MLPs, batch 256, Adam 1e-3,
Trace_ELBO) with ``pyro_vae.train`` under each setting below, and reports the training
wall time until the test ELBO first reaches ``--threshold`` nats (evaluation time not
counted: the ``seconds`` column of metrics.jsonl), then log p̂(x) with K=5000 on the first
``--images`` test images for each trained model, and for the fp32 model's own weights run
with bf16 networks (the same weights and draws: the effect of bf16 arithmetic alone).

    jit        --compile jit  --precision fp32   (the default)
    eager      --compile eager --precision fp32
    jit-bf16   --compile jit  --precision bf16

    python scripts/time_to_quality.py --data-dir ../shared/data --out runs/ttq
"""

from __future__ import annotations

import argparse
import dataclasses
from datetime import datetime
from pathlib import Path

import torch
from bench_common import DEFAULT_DATA_DIR, print_header

from pyro_vae import Run, TrainConfig, train
from pyro_vae.importance import importance_log_likelihood
from pyro_vae.registry import build_vae

SETTINGS = {
    "jit": dict(compile="jit", precision="fp32"),
    "eager": dict(compile="eager", precision="fp32"),
    "jit-bf16": dict(compile="jit", precision="bf16"),
}


def log_likelihood(model, guide, images, num_samples) -> tuple[float, float]:
    summary = importance_log_likelihood(model, guide, images, num_samples).summary
    return summary["log_likelihood"], summary["standard_error"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--out", default="runs/time-to-quality", help="folder for the runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threshold", type=float, default=-105.0, help="test ELBO, nats")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--images", type=int, default=1000, help="test images for log p̂")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    return parser.parse_args()


def train_settings(args: argparse.Namespace) -> dict[str, Run]:
    """One run of Pyro's example network per setting, each in a fresh folder under ``--out``."""
    base = TrainConfig(
        dataset="mnist",
        data_dir=args.data_dir,
        download=False,
        latent_dim=50,
        hidden_dims=[400],
        batch_size=256,
        lr=1e-3,
        epochs=args.max_epochs,
        eval_batch_size=2000,
        device=args.device,
        checkpoint_minutes=None,
        checkpoint_every=args.max_epochs,
    )
    runs = {}
    for name in args.settings:
        config = dataclasses.replace(base, **SETTINGS[name])
        run_dir = Path(args.out) / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
        runs[name] = train(config, run_dir=run_dir, progress=False)
    return runs


def time_to_threshold(history: list[dict], threshold: float) -> tuple[str, str, float]:
    """(epochs to the threshold, training seconds to it, seconds per epoch) as table cells:
    the first epoch whose test ELBO reaches ``threshold`` (history[0] is the untrained
    evaluation), or "not in N" and "-"."""
    rows = history[1:]
    reached = next((r for r in rows if r["test_elbo"] >= threshold), None)
    per_epoch = sum(r["seconds"] for r in rows) / len(rows)
    if reached is None:
        return f"not in {len(rows)}", "-", per_epoch
    seconds = sum(r["seconds"] for r in rows[: reached["epoch"]])
    return f"{reached['epoch']}", f"{seconds:.1f}", per_epoch


def bf16_log_likelihood(run: Run, images: torch.Tensor, num_samples: int) -> float:
    """log p̂(x) of ``run``'s fp32 weights in bf16 networks, with the same images and draws."""
    config = dataclasses.replace(run.config, precision="bf16")
    model, guide = build_vae(config, run.data.image_shape)
    model.load_state_dict(run.model.state_dict())
    guide.load_state_dict(run.guide.state_dict())
    device = run.data.device
    return log_likelihood(model.to(device), guide.to(device), images, num_samples)[0]


def main() -> None:
    args = parse_args()
    runs = train_settings(args)
    print_header(runs[args.settings[0]].data.device)
    print(
        f"threshold: test ELBO >= {args.threshold} nats; up to {args.max_epochs} epochs; "
        f"log p̂ with K={args.num_samples} on {args.images} test images"
    )
    print()
    print(
        "| setting | loss ran | epochs to threshold | training s to threshold | s/epoch "
        "| final test ELBO | log p̂(x) ± SE |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    images, scores = {}, {}
    for name, run in runs.items():
        epochs, to_threshold, per_epoch = time_to_threshold(run.history, args.threshold)
        images[name] = run.data.test[: args.images].float().div(255).round()
        lpx, se = scores[name] = log_likelihood(
            run.model, run.guide, images[name], args.num_samples
        )
        last = run.history[-1]
        print(
            f"| {name} | {last['compile']} | {epochs} | {to_threshold} | {per_epoch:.2f} "
            f"| {last['test_elbo']:.2f} | {lpx:.2f} ± {se:.2f} |"
        )
    if "jit" in runs:
        same_fp32 = scores["jit"][0]  # the same images, draws and seed
        same_bf16 = bf16_log_likelihood(runs["jit"], images["jit"], args.num_samples)
        print()
        print(
            f"the jit run's weights, same draws: log p̂ {same_fp32:.3f} (fp32 networks), "
            f"{same_bf16:.3f} (bf16 networks): bf16 moves it by {same_bf16 - same_fp32:+.3f} nats"
        )


if __name__ == "__main__":
    main()
