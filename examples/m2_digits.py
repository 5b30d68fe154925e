"""Semi-supervised learning with M2 (Kingma et al. 2014) on the embedded digits: 100 labels.

    p(y) p(z) p(x | y, z),  q(y | x) q(z | x, y)

The label is a latent variable of the unlabelled images, summed out exactly by Pyro's
enumeration; the classifier q(y | x) is read off the guide.

    python examples/m2_digits.py --labels 100 --epochs 100
"""

from __future__ import annotations

import argparse

from pyro_vae import TrainConfig, log_likelihood, train
from pyro_vae.semisupervised import label_error


def main(argv: list[str] | None = None) -> tuple[float, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=500, help="K of the estimate")
    parser.add_argument("--out", default="runs/m2-digits")
    args = parser.parse_args(argv)

    config = TrainConfig(model="m2", labels=args.labels, dataset="digits", epochs=args.epochs,
                         latent_dim=8, hidden_dims=[128], lr=3e-3)  # fmt: skip
    run = train(config, run_dir=args.out, progress=False)
    error = label_error(run.guide, run.data, "test")
    estimate = log_likelihood(run, "test", num_samples=args.num_samples)
    print(f"{args.labels} labels, {args.epochs} epochs: test error of argmax q(y|x) "
          f"{error:.1%}; log p̂(x) with y summed out "
          f"{estimate.summary['log_likelihood']:.2f} nats")  # fmt: skip
    return error, estimate.summary["log_likelihood"]


if __name__ == "__main__":
    main()
