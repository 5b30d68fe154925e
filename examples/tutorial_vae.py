"""Pyro's VAE tutorial, unchanged in spirit, trained and scored with pyro-vae.

The model and guide are the tutorial's: methods of an ``nn.Module`` that register the
decoder and the encoder with ``pyro.module`` and sample inside ``pyro.plate("data")``.

    p(z) = N(0, I),  p(x | z) = Bernoulli(σ(decoder(z))),  q(z | x) = N(μ(x), σ(x)²)

``train_pair`` gives them pyro-vae's training loop (JIT-checked loss, checkpoints,
metrics.jsonl); ``build`` lets the run folder be rebuilt by name, so the command line
evaluates it:

    python examples/tutorial_vae.py --epochs 30 --out runs/tutorial-vae
    PYTHONPATH=examples pyro-vae evaluate runs/tutorial-vae --import tutorial_vae
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae import PairParts, TrainConfig, importance_log_likelihood, train_pair
from pyro_vae.data import load_data


class VAE(nn.Module):
    def __init__(self, pixels: int = 64, z_dim: int = 8, hidden: int = 128):
        super().__init__()
        self.pixels, self.z_dim = pixels, z_dim
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, hidden), nn.Softplus(),
                                     nn.Linear(hidden, 2 * z_dim))  # fmt: skip
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(),
                                     nn.Linear(hidden, pixels))  # fmt: skip

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0)
            z = pyro.sample("latent", prior.to_event(1))
            logits = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(logits=logits).to_event(1),
                        obs=x.reshape(-1, self.pixels))  # fmt: skip

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x).chunk(2, -1)
            pyro.sample("latent", dist.Normal(loc, log_scale.exp()).to_event(1))

    def decoder_mean(self, latent: torch.Tensor) -> torch.Tensor:
        """E[x | z], for samples and reconstructions."""
        return torch.sigmoid(self.decoder(latent))


def build() -> PairParts:
    """The pair, built afresh: what ``pyro-vae`` calls to reload the run."""
    vae = VAE()
    return PairParts(vae.model, vae.guide, vae.decoder_mean)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--num-samples", type=int, default=1000, help="K of the estimate")
    parser.add_argument("--out", default="runs/tutorial-vae")
    args = parser.parse_args(argv)

    data = load_data("digits", "none")  # the embedded 8x8 digits; any float (N, ...) tensor
    images, test_images = data.train.float() / 255, data.test.float() / 255
    pyro.clear_param_store()
    torch.manual_seed(0)
    parts = build()
    config = TrainConfig(epochs=args.epochs, batch_size=128, valid_size=137,
                         binarize="dynamic", lr=3e-3)  # fmt: skip
    run = train_pair(parts.model, parts.guide, images, config, args.out,
                     test_images=test_images, builder="tutorial_vae:build",
                     decoder_mean=parts.decoder_mean)  # fmt: skip
    # Pyro's own tools work on the same pair: here, the toolkit's estimate of log p(x)
    estimate = importance_log_likelihood(parts.model, parts.guide, run.data.inputs("test"),
                                         num_samples=args.num_samples)  # fmt: skip
    summary = estimate.summary
    print(f"test log p̂(x) = {summary['log_likelihood']:.2f} ± {summary['standard_error']:.2f} "
          f"nats (K = {args.num_samples}); ELBO {summary['elbo']:.2f}; "
          f"k̂ > 0.7 on {summary['share_khat_above_0.7']:.0%} of the images")  # fmt: skip
    return summary["log_likelihood"]


if __name__ == "__main__":
    main()
