"""Throughput of annealed importance sampling: pyro-vae's AIS beside a hand-written one.

``pyro_vae.ais.ais_log_likelihood`` (log densities from Pyro traces of the model and the
guide conditioned on the chains' latent values, under a plate of the chains) beside a
single-purpose AIS written in plain PyTorch for the same networks: the same sigmoid
schedule, the same HMC transitions with per-chain step-size adaptation, the same draws'
count. The networks are those of RESULTS.md's row A (Burda et al.'s 784-200-200-50 tanh
MLPs, a Bernoulli decoder), freshly initialized, or a trained run's with ``--run-dir``
(throughput does not depend on the parameter values). The two take turns in one process.
Reported: images · chains · steps per second, and the ratio (the goal: at most 1.2).

    python scripts/bench_ais.py --images 20 --steps 50 --chains 16
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from bench_common import add_pair_arguments, load_pair, timings
from torch.nn import functional as F

from pyro_vae.ais import (
    ADAPT_RATE,
    STEP_SIZE_RANGE,
    AnnealingSettings,
    ais_log_likelihood,
    annealing_schedule,
)
from pyro_vae.config import TrainConfig
from pyro_vae.evaluation import EVAL_SEED, fixed_seed

# Row A of RESULTS.md (Burda et al. 2016): 784-200-200-50, tanh, Bernoulli.
ROW_A = TrainConfig(dataset="mnist", latent_dim=50, hidden_dims=[200, 200], activation="tanh")


def handwritten_ais(model, guide, x: torch.Tensor, settings: AnnealingSettings) -> torch.Tensor:
    """log p̂(x) per image by AIS from the guide, written out for this one pair."""
    chains, n = settings.num_chains, x.shape[0]
    with torch.no_grad():
        hidden = guide.encoder(x)
        loc, scale = guide.loc(hidden), F.softplus(guide.scale(hidden)) + 1e-6
    targets = x.flatten(1)

    def terms(z):  # (log p(x, z), log q(z | x)), each (C, N)
        log_pz = -0.5 * z.pow(2).sum(-1) - 0.5 * math.log(2 * math.pi) * z.shape[-1]
        logits = model.decoder(z).flatten(2)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, targets.expand_as(logits), reduction="none"
        ).sum(-1)
        eps = (z - loc) / scale
        log_q = (-0.5 * eps.pow(2) - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        return log_px + log_pz, log_q

    def log_f_and_grad(z, beta):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            joint, start = terms(z)
            value = (1 - beta) * start + beta * joint
            (grad,) = torch.autograd.grad(value.sum(), z)
        return value.detach(), grad, joint.detach(), start.detach()

    betas = annealing_schedule(settings.num_steps, settings.schedule)

    def run(chains: int, step_sizes: torch.Tensor | None):
        z = loc + scale * torch.randn(chains, n, loc.shape[-1])
        with torch.no_grad():
            joint, start = terms(z)
        log_w = torch.zeros(chains, n, dtype=torch.float64)
        step = torch.full((chains, n, 1), settings.step_size)
        used = []
        for t in range(1, len(betas)):
            beta_before, beta = float(betas[t - 1]), float(betas[t])
            log_w += (beta - beta_before) * (joint - start).double()
            if t == len(betas) - 1:
                break
            if step_sizes is not None:
                step = step_sizes[t - 1].reshape(1, n, 1).expand(chains, n, 1)
            used.append(step.log().mean(0).exp().reshape(n))
            value, grad, _, _ = log_f_and_grad(z, beta)
            p = torch.randn_like(z)
            energy = -value + 0.5 * p.pow(2).sum(-1)
            position = z
            for _ in range(settings.leapfrog_steps):
                p = p + 0.5 * step * grad
                position = position + step * p
                new_value, grad, new_joint, new_start = log_f_and_grad(position, beta)
                p = p + 0.5 * step * grad
            kinetic = 0.5 * p.pow(2).sum(-1)
            log_accept = (energy - (-new_value + kinetic)).nan_to_num(float("-inf"))
            accept = log_accept.clamp(max=0).exp()
            moved = (torch.rand_like(accept) < accept).unsqueeze(-1)
            z = torch.where(moved, position, z)
            joint = torch.where(moved[..., 0], new_joint, joint)
            start = torch.where(moved[..., 0], new_start, start)
            if step_sizes is None:  # the pilot adapts
                rate = torch.exp(ADAPT_RATE * (accept - settings.target_acceptance))
                step = (step * rate.unsqueeze(-1)).clamp(*STEP_SIZE_RANGE)
        return log_w, torch.stack(used) if used else None

    _, step_sizes = run(settings.pilot_chains, None)
    log_w, _ = run(chains, step_sizes)
    return torch.logsumexp(log_w, 0) - math.log(chains)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pair_arguments(parser, images=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--leapfrog-steps", type=int, default=10)
    args = parser.parse_args()
    model, guide, data, config, device = load_pair(args, ROW_A)
    model.eval(), guide.eval()
    x = data.split("test")[: args.images].float() / 255
    settings = AnnealingSettings(
        num_steps=args.steps, num_chains=args.chains, leapfrog_steps=args.leapfrog_steps
    )
    print(f"network: {config.hidden_dims} {config.activation}, latent {config.latent_dim}; "
          f"{args.images} images x {args.chains} chains x {args.steps} steps x "
          f"{args.leapfrog_steps} leapfrog steps")  # fmt: skip

    def ours():
        return ais_log_likelihood(model, guide, x, settings).log_likelihood

    def theirs():
        with fixed_seed(EVAL_SEED, device):
            return handwritten_ais(model, guide, x, settings).numpy()

    seconds, results = timings({"pyro-vae": ours, "hand-written": theirs}, args.repeats, device)
    work = args.images * args.chains * args.steps
    print("| AIS | s | images·chains·steps per s | vs hand-written | mean log p̂(x) |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("pyro-vae", "hand-written"):
        ratio = seconds[name] / seconds["hand-written"]
        print(f"| {name} | {seconds[name]:.2f} | {work / seconds[name]:,.0f} | {ratio:.2f}x | "
              f"{np.mean(results[name]):.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
