"""What replaces TorchScript: SVI step time of the JIT-traced loss beside torch.compile, in one
process.

PyTorch has deprecated TorchScript, on which ``--compile jit`` (Pyro's JIT ELBOs) rests. This
measures the candidates on the network of Pyro's VAE example (784-400-50 MLPs, softplus,
Trace_ELBO, batch 256, one fused Adam), on random binary 28x28 images (the step time does
not depend on the pixel values):

    eager             Pyro's eager Trace_ELBO (--compile eager)
    jit               pyro_vae.compiled: Pyro's JitTrace_ELBO, checked (--compile jit)
    compile-networks  eager Pyro handlers, encoder and decoder under torch.compile (the step
                      below Pyro's handlers)
    compile-loss      torch.compile of the whole eager loss, Pyro's handlers included

``--elbo``, ``--num-particles``, ``--hidden-dims``, ``--latent-dim`` and ``--activation``
(``pyro-vae train``'s options) measure another objective and network instead, row C of
RESULTS.md say (IWAE k=5 with DReG gradients, 2×200 tanh, batch 20).

Each variant has its own freshly initialized copy of the same network; the first
``--warmup`` steps (compilation included) are not timed, then the variants take turns for
one untimed and ``--rounds`` timed rounds of ``--steps`` steps, and the median step time is
reported.

    python scripts/bench_compile.py --rounds 5 --steps 40
    python scripts/bench_compile.py --variants eager jit --elbo iwae-dreg --num-particles 5 \
        --hidden-dims 200 200 --activation tanh --batch-size 20
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import pyro
import torch
from bench_common import print_header, timings

from pyro_vae.compiled import training_loss
from pyro_vae.config import TrainConfig
from pyro_vae.nn import ACTIVATIONS
from pyro_vae.registry import build_vae, make_elbo, names
from pyro_vae.run import resolve_device
from pyro_vae.svi import adam, svi_step

VARIANTS = ("eager", "jit", "compile-networks", "compile-loss")


def make_step(variant: str, config: TrainConfig, x: torch.Tensor):
    """A function taking one SVI step of ``variant`` on a batch, with its own network."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = build_vae(config, (1, 28, 28))
    if variant == "compile-networks":
        model.decoder.compile()
        guide.encoder.compile()
    named = list(torch.nn.ModuleDict({"model": model, "guide": guide}).named_parameters())
    mode = "jit" if variant == "jit" else "eager"
    loss, _ = training_loss(make_elbo(config), model, guide, x, named, mode)
    if variant == "compile-loss":
        loss = torch.compile(loss)
    optimizer = adam([p for _, p in named], config.lr)
    return lambda batch: svi_step(loss, optimizer, batch)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--elbo", default="trace", choices=names("elbo"))
    parser.add_argument("--num-particles", type=int, default=1)
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[400])
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--activation", default="softplus", choices=list(ACTIVATIONS))
    return parser.parse_args()


def warmed_up_steps(
    variants: list[str], config: TrainConfig, batches: torch.Tensor, warmup: int
) -> tuple[dict[str, Callable], dict[str, str]]:
    """Each variant's step after ``warmup`` untimed steps (its compilation), and the reason
    of each variant that could not run; both printed as they come."""
    steps, failed = {}, {}
    for variant in variants:
        try:
            step = make_step(variant, config, batches[0])
            started = time.perf_counter()
            for i in range(warmup):
                step(batches[i % len(batches)])
            print(
                f"{variant}: warm-up (compilation included) {time.perf_counter() - started:.1f} s"
            )
            steps[variant] = step
        except Exception as error:  # noqa: BLE001 - a variant that cannot run is reported
            failed[variant] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            print(f"{variant}: failed ({failed[variant]})")
    return steps, failed


def print_table(seconds: dict[str, float], failed: dict[str, str]) -> None:
    """Milliseconds per step of each variant, and its ratio to the jit variant's."""
    print("| variant | ms per step | vs jit |")
    print("| --- | --- | --- |")
    base = seconds.get("jit")
    for variant, value in seconds.items():
        ratio = f"{value / base:.2f}x" if base else ""
        print(f"| {variant} | {1000 * value:.2f} | {ratio} |")
    for variant, reason in failed.items():
        print(f"| {variant} | failed: {reason} | |")


def main() -> None:
    args = parse_args()
    device = resolve_device("auto")
    config = TrainConfig(
        hidden_dims=args.hidden_dims,
        latent_dim=args.latent_dim,
        activation=args.activation,
        elbo=args.elbo,
        num_particles=args.num_particles,
        device=device.type,
    )
    generator = torch.Generator().manual_seed(0)
    batches = torch.bernoulli(
        torch.full((8, args.batch_size, 1, 28, 28), 0.13), generator=generator
    ).to(device)
    steps, failed = warmed_up_steps(args.variants, config, batches, args.warmup)

    def steps_of(step: Callable) -> Callable[[], None]:
        return lambda: [step(batches[i % len(batches)]) for i in range(args.steps)]

    # the variants take turns, round by round; timings' own first round is one more warm-up
    seconds, _ = timings(
        {variant: steps_of(step) for variant, step in steps.items()}, args.rounds, device
    )
    print()
    print_header(device)
    network = "-".join(map(str, [784, *args.hidden_dims, args.latent_dim])) + f" {args.activation}"
    print(f"{args.elbo} (K = {args.num_particles}), {network} MLPs, batch {args.batch_size}, "
          f"median of {args.rounds} rounds of {args.steps} steps\n")  # fmt: skip
    print_table({variant: value / args.steps for variant, value in seconds.items()}, failed)


if __name__ == "__main__":
    main()
