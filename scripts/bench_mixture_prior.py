"""What the VampPrior costs in log p̂(x): diagonal-normal components scored by the
expansion of ``pyro_vae.models.priors._Mixture`` against the broadcast of every code against every
component that it replaced, side by side in one process, taking turns.

With K = 5000 importance samples an image's codes meet 500 pseudo-inputs' components of
40 dimensions: 10⁸ terms per image either way, as elementwise arithmetic on a
(5000, 500, 40) tensor (broadcast) or as two matrix products (expansion). Before the
timing, both score the same 5000 codes of the first image against a float64 computation of
the same mixture, and estimate that image's log p̂(x) from the same draws (one chunk).
In the timed runs each path sizes its chunks of draws by the memory a draw takes, which
the broadcast inflates, so there the two draw different codes. A second table times a
training step (the ELBO's loss and gradients, eager, one particle) on a batch of training
images, where each code meets the components once.

The network is row D's of RESULTS.md (VampPrior, 500 pseudo-inputs, 40 latents, 2×300
gated MLPs), freshly initialized (the arithmetic does not depend on the values); pass
``--run-dir`` for a trained run's.

    python scripts/bench_mixture_prior.py --images 10 --batch-size 100
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from unittest import mock

import pyro
import torch
from bench_common import add_pair_arguments, load_pair, timings
from pyro_vae.models import priors

from pyro_vae.config import TrainConfig
from pyro_vae.importance import importance_log_likelihood

PATHS = ("broadcast", "expansion")
ROW_D = dict(
    dataset="mnist", prior="vamp", prior_components=500, latent_dim=40,
    encoder="gated-mlp", decoder="gated-mlp", hidden_dims=[300, 300],
)  # fmt: skip


def scored_by(path: str):
    """A context in which mixtures are scored by ``path``: "expansion" (the code as it is)
    or "broadcast" (the expansion's test for shared diagonal normals made to fail)."""
    if path == "expansion":
        return nullcontext()
    return mock.patch.object(priors, "_shared_diagonal_normal", lambda components: None)


def log_likelihood(model, guide, images, num_samples: int, path: str, **kwargs):
    """Per-image log p̂(x), the mixture scored by ``path``."""
    with scored_by(path):
        return importance_log_likelihood(model, guide, images, num_samples, **kwargs)


@torch.no_grad()
def prior_errors(model, guide, image: torch.Tensor, num_samples: int) -> dict[str, float]:
    """Largest |error| of log p(z) by each path, on ``num_samples`` codes of q(z | image),
    against the same mixture in float64; and, under "log p̂(x)", each path's estimate for
    the image from the same draws."""
    z = guide.posterior(image[None]).sample((num_samples,))[:, 0]
    mixture = model.prior((num_samples,))
    loc, scale = priors._shared_diagonal_normal(mixture.component_distribution)
    log_weights = torch.log_softmax(mixture.mixture_distribution.logits.double(), -1)
    components = torch.distributions.Normal(loc.double(), scale.double())
    exact = torch.logsumexp(components.log_prob(z.double()[:, None]).sum(-1) + log_weights, -1)
    errors = {}
    for path in PATHS:
        with scored_by(path):
            errors[path] = (mixture.log_prob(z).double() - exact).abs().max().item()
    one_chunk = dict(max_elements=10**12)
    errors["log p̂(x)"] = {
        path: log_likelihood(
            model, guide, image[None], num_samples, path, **one_chunk
        ).log_likelihood.item()
        for path in PATHS
    }
    return errors


def training_step(model, guide, batch: torch.Tensor, path: str) -> None:
    """One eager Trace_ELBO loss and backward pass, the mixture scored by ``path``."""
    with scored_by(path):
        pyro.infer.Trace_ELBO().differentiable_loss(model, guide, batch).backward()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add_pair_arguments(parser, images=10)
    parser.add_argument("--batch-size", type=int, default=100, help="of the training step")
    parser.add_argument("--steps", type=int, default=20, help="training steps per repeat")
    args = parser.parse_args()

    model, guide, data, config, device = load_pair(args, TrainConfig(**ROW_D))
    prior = getattr(model, "prior", None)
    components = getattr(prior(()) if prior is not None else None, "component_distribution", None)
    if components is None or priors._shared_diagonal_normal(components) is None:
        parser.error(
            f"{args.run_dir}: its prior has no diagonal-normal mixture components to compare "
            "the two paths on; give a run with --prior vamp (a diag-normal guide) or mog"
        )
    images = data.test[: args.images].float() / 255
    print(
        f"prior {config.prior} ({config.prior_components} components, {config.latent_dim} "
        f"latents), {images.shape[0]} MNIST test images, K={args.num_samples}"
    )

    errors = prior_errors(model, guide, images[0], args.num_samples)
    estimate, _ = timings(
        {
            path: lambda path=path: log_likelihood(model, guide, images, args.num_samples, path)
            for path in PATHS
        },
        args.repeats,
        device,
    )
    print()
    print(
        f"| mixture scored by | log p̂(x): s per image (median of {args.repeats}) | speed-up "
        "| largest error of log p(z) against float64 | first image's log p̂(x), same draws |"
    )
    print("| --- | --- | --- | --- | --- |")
    for path, seconds in estimate.items():
        print(
            f"| {path} | {seconds / images.shape[0]:.3f} "
            f"| {estimate['broadcast'] / seconds:.2f}x "
            f"| {errors[path]:.1e} | {errors['log p̂(x)'][path]:.5f} |"
        )

    batch = torch.bernoulli(data.train[: args.batch_size].float() / 255)  # binarized once
    step, _ = timings(
        {
            path: lambda path=path: [
                training_step(model, guide, batch, path) for _ in range(args.steps)
            ]
            for path in PATHS
        },
        args.repeats,
        device,
    )
    print()
    print(f"| mixture scored by | training step, ms (batch {args.batch_size}) | speed-up |")
    print("| --- | --- | --- |")
    for path, seconds in step.items():
        print(
            f"| {path} | {1000 * seconds / args.steps:.2f} | {step['broadcast'] / seconds:.2f}x |"
        )


if __name__ == "__main__":
    main()
