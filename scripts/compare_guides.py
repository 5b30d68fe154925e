"""Every variational family of the registry, trained under one budget on MNIST.

Each guide trains the same model (784-400-50 MLP decoder, Bernoulli likelihood, standard
normal prior) for the same number of epochs with the same seed, then is scored by the
test ELBO and the importance-sampled log-likelihood with its PSIS diagnostics. Writes a
markdown table (and prints it as it fills). Re-running continues unfinished runs from
their checkpoints, so the experiment survives interruption.

    python scripts/compare_guides.py --epochs 3 --max-images 500 --out compare_guides.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
from datetime import datetime, timezone
from pathlib import Path

import pyro
import torch
from bench_common import DEFAULT_DATA_DIR

from pyro_vae import REGISTRY, TrainConfig, log_likelihood, train
from pyro_vae.run_folder import RunFolder

COLUMNS = (
    "| guide | test ELBO | log p̂(x), K={k} | gap | share k̂ > 0.7 | mean ESS | s/epoch |\n"
    "| --- | --- | --- | --- | --- | --- | --- |"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--guides", nargs="+", default=list(REGISTRY["guide"]))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--max-images", type=int, default=500, help="test images for log p̂(x)")
    parser.add_argument("--runs-dir", default="runs/compare-guides")
    parser.add_argument("--out", default="compare_guides.md")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    header = [
        f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"python {platform.python_version()}, torch {torch.__version__}, pyro {pyro.__version__}",
        f"MNIST (dynamic binarization), {args.epochs} epochs, batch 256, Adam 1e-3, "
        f"latent 50, hidden 400; log p̂(x) on the first {args.max_images} test images",
        "",
        COLUMNS.format(k=args.num_samples),
    ]
    print("\n".join(header), flush=True)
    rows = []
    for name in args.guides:
        config = TrainConfig(
            dataset="mnist",
            data_dir=args.data_dir,
            download=False,
            guide=name,
            latent_dim=50,
            hidden_dims=[400],
            batch_size=256,
            epochs=args.epochs,
            device=args.device,
        )
        run_dir = Path(args.runs_dir) / name
        # A run stopped before its first checkpoint has its config.json: it starts afresh.
        resume = RunFolder(run_dir).holds_run()
        run = train(config, run_dir=run_dir, progress=False, resume=resume)
        device = run.data.device
        seconds = statistics.mean(row["seconds"] for row in run.history[1:])
        estimate = log_likelihood(run, "test", args.num_samples, args.max_images).summary
        row = (
            f"| {name} | {run.test_elbo:.2f} | {estimate['log_likelihood']:.2f} ± "
            f"{estimate['standard_error']:.2f} | {estimate['gap']:.2f} | "
            f"{estimate['share_khat_above_0.7']:.1%} | {estimate['ess_mean']:.0f} | {seconds:.2f} |"
        )
        rows.append(row)
        print(row, flush=True)
    header.insert(1, f"device: {device}")
    Path(args.out).write_text("\n".join(header + rows) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
