"""Evaluation of a trained model/guide pair on a fixed split.

Every estimate runs under a fixed random seed inside ``torch.random.fork_rng``, so the same
parameters always give the same number and the caller's random stream is left untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import pyro
import torch
from pyro import poutine
from torch import nn

from pyro_vae.data import ImageData
from pyro_vae.errors import UserInputError
from pyro_vae.labels import label_arguments

EVAL_SEED = 0


def program_modules(program: Callable) -> list[nn.Module]:
    """The nn.Module a Pyro program is, or is a bound method of (pure functions: none)."""
    owner = getattr(program, "__self__", program)
    return [owner] if isinstance(owner, nn.Module) else []


@contextlib.contextmanager
def eval_mode(*programs: Callable):
    """The programs' modules in eval mode (dropout off, batch-norm statistics used), every
    submodule's own mode restored afterwards."""
    modes = {m: m.training for p in programs for root in program_modules(p) for m in root.modules()}
    for module in modes:
        module.training = False
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def stream_seed(*keys: int) -> int:
    """A seed for the random stream that ``keys`` name (NumPy's ``SeedSequence`` of them):
    streams of different keys are independent however the keys relate, so the stream
    (seed 1, batch 2) is not (seed 2, batch 1)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Run the block, then put torch's (CPU and ``device``) random state back as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


@contextlib.contextmanager
def fixed_seed(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's (CPU and ``device``) random state seeded, then restore it."""
    with preserved_rng(device):
        torch.manual_seed(seed)
        yield


def per_image_terms(
    model: nn.Module, guide: nn.Module, *args: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x|z) and log q(z|x) - log p(z) per image of ``args[0]``, from one draw z ~ q:
    Trace_ELBO's single-sample terms, kept per data point.

    A guide site marked for enumeration (m2's label) is summed over exactly, as
    TraceEnum_ELBO does: its values are enumerated in parallel at dim -2 and each value's
    terms are weighted by its probability under q, which adds KL(q(y|x) || p(y)) to the KL
    term (Kingma et al. 2014, eq. 7).
    """
    guide_trace = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    reconstruction, kl, log_q_enumerated = 0, 0, 0
    for program, trace in (("guide", guide_trace), ("model", model_trace)):
        for site in trace.nodes.values():
            if site["type"] != "sample" or poutine.util.site_is_subsample(site):
                continue
            log_prob = site["scale"] * site["fn"].log_prob(site["value"])
            if site["is_observed"]:
                reconstruction = reconstruction + log_prob
            elif program == "guide":
                kl = kl + log_prob
                if site["infer"].get("_enumerate_dim") is not None:
                    log_q_enumerated = log_q_enumerated + log_prob
            else:
                kl = kl - log_prob
    n = args[0].shape[0]
    if torch.is_tensor(log_q_enumerated):
        reconstruction = enumerated_expectation(log_q_enumerated, reconstruction, (n,))
        kl = enumerated_expectation(log_q_enumerated, kl, (n,))
    return reconstruction.expand(n), kl.expand(n)


def enumerated_values(value: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``value`` as ``(values, *shape)``: its dims left of ``shape``, where Pyro put the
    enumerated sites' values (broadcast: one value where a term does not depend on them),
    flattened into one."""
    return value.expand(*value.shape[: value.dim() - len(shape)], *shape).reshape(-1, *shape)


def enumerated_expectation(
    log_q: torch.Tensor, value: torch.Tensor, shape: tuple[int, ...]
) -> torch.Tensor:
    """Σ_y q(y|x) value_y over the enumerated values y, of shape ``shape``: the exact
    expectation TraceEnum_ELBO takes; ``log_q`` is log q(y|x) of the enumerated sites."""
    log_q, value = torch.broadcast_tensors(log_q, value)
    return (enumerated_values(log_q, shape).exp() * enumerated_values(value, shape)).sum(0)


@torch.no_grad()
def elbo_terms(
    model: nn.Module,
    guide: nn.Module,
    data: ImageData,
    split: str = "test",
    batch_size: int = 1000,
    seed: int = EVAL_SEED,
) -> dict[str, float]:
    """The ELBO on ``split`` and its two terms, in nats per image:

        ELBO = E_q[log p(x|z)] - E_q[log q(z|x) - log p(z)] = reconstruction - kl

    each estimated from one draw z ~ q(z|x) per image: the draw, and the estimate, of Pyro's
    single-sample ``Trace_ELBO``, whatever objective trained the run, so the number compares
    across objectives (an IWAE-trained run is not credited its bound). The reconstruction
    term sums the model's observed sites, the KL term its latent sites (every layer of a
    hierarchy) against the guide's; a KL near zero is posterior collapse. m2's label is
    summed out exactly (:func:`per_image_terms`); a cvae is scored given the labels.
    """
    if not len(data.split(split)):
        raise UserInputError(
            f"the {split} split of this run is empty (trained with --valid-size 0?); "
            "evaluate another split"
        )
    totals = torch.zeros(2, device=data.device)  # sum of log p(x|z), sum of the KL estimate
    labels = data.split_labels(split).split(batch_size)
    with eval_mode(model, guide), fixed_seed(seed, data.device), pyro.validation_enabled(False):
        for x, y in zip(data.eval_batches(split, batch_size), labels):
            terms = per_image_terms(model, guide, x, *label_arguments(model, y))
            totals += torch.stack([term.sum() for term in terms])
    reconstruction, kl = (totals / data.split(split).shape[0]).tolist()
    return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
