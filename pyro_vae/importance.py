"""Importance-sampled log-likelihood log p̂(x), per data point, with its diagnostics.

For each data point x and K draws z_k ~ q(z|x) from the guide,

    log w_k  = log p(x, z_k) - log q(z_k | x)
    log p̂(x) = logsumexp_k log w_k - log K          (Burda et al. 2016, "Importance
                                                      Weighted Autoencoders", eq. 8)

E[p̂(x)] = p(x), and log p̂(x) is a lower bound in expectation that tightens as K grows:
L_k = E[logsumexp of k weights] - log k satisfies ELBO = L_1 <= L_k <= L_m <= log p(x) for
k <= m. The log-weights come from Pyro traces of the project's own model and guide, run
under a particle plate (``pyro.plate("particles", K, dim=-2)``), so every model/guide pair
the registry offers is covered, including ones added later. Unlike Pyro's ``Importance``
and ``vectorized_importance_weights``, which sum log-weights over the data plate (one joint
weight per minibatch), the sites' log-probabilities are kept per data point here.

Reliability: the Pareto-smoothed importance sampling shape k̂ (Vehtari et al. 2024, via
``arviz.psislw``) and the effective sample size (Σw)²/Σw² are reported per data point;
k̂ > 0.7 means the weights' tail is too heavy for the estimate to be trusted.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_vae.distributed import SINGLE, ProcessGroup
from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import EVAL_SEED, fixed_seed, stream_seed

KHAT_THRESHOLD = 0.7
BOUND_SIZES = (1, 5, 50, 500, 5000)
# Elements of the largest per-chunk tensor (particles x images x the values one draw adds to
# the largest tensor, the pixels for an MLP, a feature map for a conv net): 2**25 fp32
# values are 128 MiB, which keeps K=5000 on MNIST within a few GiB on the CPU.
DEFAULT_MAX_ELEMENTS = 2**25
EQUAL_LOG_WEIGHTS = 1e-5


def _data_plate_sites(trace, program: str) -> list[dict]:
    sites = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if not any(frame.name == "data" for frame in site["cond_indep_stack"]):
            raise UserInputError(
                f"{program} site {name!r} is outside the 'data' plate, so its log-probability "
                "cannot be split per data point; put every sample site inside pyro.plate('data')"
            )
        sites.append(site)
    return sites


def log_importance_weights(
    model: Callable, guide: Callable, x: torch.Tensor, num_particles: int
) -> torch.Tensor:
    """log p(x, z_k) - log q(z_k | x) for K particles per image: shape ``(K, N)``.

    Differentiable (the IWAE objective takes gradients through it). Each site's
    log-probability is multiplied by its Pyro ``scale``, which is 1 unless a handler such as
    KL warm-up's :class:`~pyro_vae.objectives.LatentScale` set it.
    """
    model_trace, guide_trace = particle_traces(model, guide, x, num_particles)
    log_w = site_log_probs(model_trace, "model") - site_log_probs(guide_trace, "guide")
    return log_w.expand(num_particles, x.shape[0])


def particle_traces(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_particles: int,
    around_guide: contextlib.AbstractContextManager | None = None,
):
    """The guide's trace and the model's trace replayed on it, under a particle plate.

    ``around_guide``, a handler outside the guide's trace (so the trace records what it
    does to the values), such as the gradient scaling of the DReG objective.
    """
    with pyro.plate("particles", num_particles, dim=-2):
        with around_guide or contextlib.nullcontext():
            guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return model_trace, guide_trace


def site_log_probs(trace, program: str) -> torch.Tensor:
    """Σ over the sample sites of a particle-plate ``trace`` of scale · log-probability, per
    particle and data point: shape ``(K, N)``."""
    total = 0
    for site in _data_plate_sites(trace, program):
        total = total + site["scale"] * site["fn"].log_prob(site["value"])
    return total


class _OutputSizes(TorchDispatchMode):
    """Records how many values the largest tensor each operation returns holds."""

    def __init__(self):
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.sizes.append(max((t.numel() for t in tensors), default=0))
        return out


def values_per_draw(model: Callable, guide: Callable, image: torch.Tensor) -> int:
    """How many values one more particle of one image adds to the largest tensor made while
    scoring it: the unit the memory budget of :func:`importance_log_likelihood` counts.

    The image (shape ``(1, C, H, W)``) is scored with one and with two particles and the
    outputs of the same operations compared, so a tensor that does not grow with the
    particles (a VampPrior's pass over its pseudo-inputs) is not counted. At least the
    image's pixel count.
    """
    runs = []
    for particles in (1, 2):
        recorder = _OutputSizes()
        with torch.no_grad(), pyro.validation_enabled(False), recorder:
            log_importance_weights(model, guide, image, particles)
        runs.append(recorder.sizes)
    one, two = runs
    if len(one) == len(two):
        growth = max(b - a for a, b in zip(one, two))
    else:  # not the same operations: count the whole of the largest tensor per draw
        growth = max(two) // 2
    return max(growth, image[0].numel())


def log_mean_exp(log_w: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def iwae_bound(log_w: torch.Tensor, k: int) -> torch.Tensor:
    """Per data point, L_k from ``(K, N)`` log-weights: the mean over K // k disjoint groups of k.

    Using every group (not just the first) gives the same expectation with less variance.
    """
    groups = log_w.shape[0] // k
    return log_mean_exp(log_w[: groups * k].reshape(groups, k, -1), dim=1).mean(0)


def psis_khat(log_w: np.ndarray) -> np.ndarray:
    """Pareto k̂ per row of ``(N, K)`` log-weights (arviz.psislw, samples on the last axis).

    Where a row's weights are all equal (the guide is the exact posterior) the generalized
    Pareto fit is undefined and arviz returns inf; such a row is perfectly reliable and gets 0.
    "Equal" allows fp32 rounding: a spread of log-weights below 1e-5 (weights within 0.001%).
    """
    import arviz

    with warnings.catch_warnings():  # arviz warns on k̂ > 0.7; this module reports it itself
        warnings.simplefilter("ignore")
        _, khat = arviz.psislw(log_w.astype(np.float64), 1.0)
    khat = np.asarray(khat, dtype=np.float64)
    khat[np.ptp(log_w, axis=-1) < EQUAL_LOG_WEIGHTS] = 0.0
    return khat


@dataclass
class LogLikelihoodEstimate:
    """Per data point values and their summaries; nats per image throughout."""

    num_samples: int
    log_likelihood: np.ndarray  # log p̂(x_i), shape (N,)
    elbo: np.ndarray  # mean_k log w_k per data point (the ELBO estimated from K draws)
    bounds: dict[int, np.ndarray]  # L_k per data point
    khat: np.ndarray
    ess: np.ndarray  # (Σw)² / Σw², between 1 and K
    labels: np.ndarray | None = None
    summary: dict = field(init=False)

    def __post_init__(self) -> None:
        n = self.log_likelihood.shape[0]
        unreliable = float(np.mean(self.khat > KHAT_THRESHOLD))
        self.summary = {
            "num_images": n,
            "num_samples": self.num_samples,
            "log_likelihood": float(self.log_likelihood.mean()),
            "standard_error": float(self.log_likelihood.std(ddof=1) / math.sqrt(n))
            if n > 1
            else None,
            "elbo": float(self.elbo.mean()),
            "gap": float((self.log_likelihood - self.elbo).mean()),
            "bounds": {f"L_{k}": float(v.mean()) for k, v in self.bounds.items()},
            "khat_mean": float(self.khat.mean()),
            "khat_max": float(self.khat.max()),
            "share_khat_above_0.7": unreliable,
            "ess_mean": float(self.ess.mean()),
            "reliable": unreliable == 0.0,
        }

    @property
    def warning(self) -> str | None:
        share = self.summary["share_khat_above_0.7"]
        if share == 0:
            return None
        return (
            f"k̂ > {KHAT_THRESHOLD} for {share:.1%} of the data points: their importance weights "
            "are too heavy-tailed for log p̂(x) to be trusted (more samples or a better guide)"
        )


def importance_log_likelihood(
    model: nn.Module,
    guide: nn.Module,
    images: torch.Tensor,
    num_samples: int = 5000,
    bound_sizes: Sequence[int] = BOUND_SIZES,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    seed: int = EVAL_SEED,
    labels: torch.Tensor | None = None,
    progress=None,
    group: ProcessGroup = SINGLE,
) -> LogLikelihoodEstimate:
    """Estimate log p(x) for every image in ``images`` (floats, ``(N, C, H, W)``).

    Images are taken in batches and particles in chunks so that no tensor holds more than
    ``max_elements`` values (particles x images x :func:`values_per_draw`, which is the pixels
    for an MLP and a feature map for a conv net); all K log-weights of a data point
    are kept, in fp32, for the bounds and k̂. ``progress(n)`` is called as images finish.

    Under torchrun (``group``, ``pyro_vae.distributed``) the ranks take every N-th batch
    and every rank receives all images' values; the result equals one process's.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise UserInputError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if images.ndim != 4 or images.shape[0] < 1:
        raise UserInputError(
            f"images must be a non-empty (N, C, H, W) tensor, got {tuple(images.shape)}"
        )
    sizes = [k for k in bound_sizes if k <= num_samples]
    was_training = model.training, guide.training
    model.eval()
    guide.eval()
    done: list[tuple[int, dict[str, torch.Tensor]]] = []  # (batch number, its columns)
    try:
        with fixed_seed(seed, images.device):
            per_draw = values_per_draw(model, guide, images[:1])
        batch = max(1, min(images.shape[0], max_elements // (num_samples * per_draw)))
        chunk = max(1, min(num_samples, max_elements // (batch * per_draw)))
        starts = range(0, images.shape[0], batch)
        for number in range(group.rank, len(starts), group.world_size):
            x = images[starts[number] : starts[number] + batch]
            # Each batch draws from a stream of its own, named by its first image: an image's
            # estimate depends on no other batch, and ranks sharing the batches out give what
            # one process gives.
            with fixed_seed(stream_seed(seed, starts[number]), images.device):
                done.append((number, _batch_columns(model, guide, x, num_samples, chunk, sizes)))
            if progress is not None:
                progress(x.shape[0] * group.world_size)
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    parts = sorted(part for rank_parts in group.gather(done) for part in rank_parts)

    def joined(key: str) -> np.ndarray:
        return torch.cat([columns[key] for _, columns in parts]).double().numpy()

    return LogLikelihoodEstimate(
        num_samples=num_samples,
        log_likelihood=joined("lpx"),
        elbo=joined("elbo"),
        bounds={k: joined(f"L_{k}") for k in sizes},
        khat=joined("khat"),
        ess=joined("ess"),
        labels=None if labels is None else labels.cpu().numpy(),
    )


@torch.no_grad()
def _batch_columns(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, chunk: int, sizes: list
) -> dict[str, torch.Tensor]:
    """The per-image values of one batch from all K log-weights (on the CPU, for gathering)."""
    with pyro.validation_enabled(False):
        log_w = torch.cat(
            [
                log_importance_weights(model, guide, x, min(chunk, num_samples - k0))
                for k0 in range(0, num_samples, chunk)
            ]
        )
    normalized = log_w - torch.logsumexp(log_w, 0)
    columns = {
        "lpx": log_mean_exp(log_w, 0),
        "elbo": log_w.mean(0),
        "ess": torch.exp(-torch.logsumexp(2 * normalized, 0)),
        **{f"L_{k}": iwae_bound(log_w, k) for k in sizes},
    }
    columns = {key: value.cpu() for key, value in columns.items()}
    columns["khat"] = torch.from_numpy(psis_khat(log_w.T.cpu().numpy()))
    return columns


def _finite_or_none(value):
    """JSON has no inf or NaN: such summary values are written as null."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_evaluation(
    estimate: LogLikelihoodEstimate, out_dir: Path, extra: dict | None = None
) -> list[Path]:
    """``evaluation.json`` (summary), ``evaluation_per_datapoint.csv`` and ``khat.png``."""
    from pyro_vae.plots import save_khat_plot

    summary = {**(extra or {}), **estimate.summary, "warning": estimate.warning}
    json_path = out_dir / "evaluation.json"
    json_path.write_text(json.dumps(_finite_or_none(summary), indent=2, allow_nan=False) + "\n")
    csv_path = out_dir / "evaluation_per_datapoint.csv"
    labels = estimate.labels if estimate.labels is not None else np.full(len(estimate.khat), -1)
    bound_names = [f"L_{k}" for k in estimate.bounds]
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "log_likelihood", "elbo", *bound_names, "khat", "ess"])
        for i in range(len(estimate.khat)):
            bounds = [f"{estimate.bounds[k][i]:.6f}" for k in estimate.bounds]
            writer.writerow(
                [
                    i,
                    int(labels[i]),
                    f"{estimate.log_likelihood[i]:.6f}",
                    f"{estimate.elbo[i]:.6f}",
                    *bounds,
                    f"{estimate.khat[i]:.4f}",
                    f"{estimate.ess[i]:.2f}",
                ]
            )
    khat_path = out_dir / "khat.png"
    save_khat_plot(estimate.khat, KHAT_THRESHOLD, khat_path)
    return [json_path, csv_path, khat_path]
