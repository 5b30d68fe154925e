"""Evaluation of a trained model/guide pair on a fixed split.

Every estimate runs under a fixed random seed inside ``torch.random.fork_rng``, so the same
parameters always give the same number and the caller's random stream is left untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pyro
import torch
from pyro import poutine
from torch import nn

from pyro_vae.data import ImageData
from pyro_vae.errors import UserInputError

EVAL_SEED = 0


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
    hierarchy) against the guide's; a KL near zero is posterior collapse.
    """
    if not len(data.split(split)):
        raise UserInputError(
            f"the {split} split of this run is empty (trained with --valid-size 0?); "
            "evaluate another split"
        )
    was_training = model.training, guide.training
    model.eval()
    guide.eval()
    totals = torch.zeros(2, device=data.device)  # sum of log p(x|z), sum of the KL estimate
    try:
        with fixed_seed(seed, data.device), pyro.validation_enabled(False):
            for x in data.eval_batches(split, batch_size):
                guide_trace = poutine.trace(guide).get_trace(x)
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
                reconstruction = model_trace.log_prob_sum(lambda _, site: site["is_observed"])
                prior = model_trace.log_prob_sum(lambda _, site: not site["is_observed"])
                totals += torch.stack([reconstruction, guide_trace.log_prob_sum() - prior])
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    reconstruction, kl = (totals / data.split(split).shape[0]).tolist()
    return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
