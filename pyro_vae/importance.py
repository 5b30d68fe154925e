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

A guide site marked for enumeration (m2's label y, ``pyro_vae.models.conditional``) is summed over
exactly rather than sampled: each of its values gets its own K draws of the other sites,
and with w_{y,k} = p(x, y, z_{y,k}) / q(z_{y,k} | x, y),

    s_k = Σ_y w_{y,k},   p̂(x) = (1/K) Σ_k s_k

each s_k an unbiased estimate of p(x) (a stratified one, over y), so the bounds, k̂ and ESS
below are those of the s_k. The ELBO reported is then the enumerated one,
Σ_y q(y|x) (mean_k log w_{y,k} - log q(y|x)), which is at most L_1 = E[log s_1].

Reliability: the Pareto-smoothed importance sampling shape k̂ (Vehtari et al. 2024, via
``arviz.psislw``) and the effective sample size (Σw)²/Σw² are reported per data point;
k̂ > 0.7 means the weights' tail is too heavy for the estimate to be trusted.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_vae.distributed import SINGLE, ProcessGroup
from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import (
    EVAL_SEED,
    enumerated_expectation,
    enumerated_values,
    eval_mode,
    fixed_seed,
    stream_seed,
)
from pyro_vae.torch_private import TorchDispatchMode

KHAT_THRESHOLD = 0.7
BOUND_SIZES = (1, 5, 50, 500, 5000)
# Elements of the largest per-chunk tensor (particles x images x the values one draw adds to
# the largest tensor, the pixels for an MLP, a feature map for a conv net): 2**25 fp32
# values are 128 MiB, which keeps K=5000 on MNIST within a few GiB on the CPU.
DEFAULT_MAX_ELEMENTS = 2**25
EQUAL_LOG_WEIGHTS = 1e-5


def _data_plate_sites(trace, program: str, data_plate: str = "data") -> list[dict]:
    sites = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if not any(frame.name == data_plate for frame in site["cond_indep_stack"]):
            raise UserInputError(
                f"{program} site {name!r} is outside the {data_plate!r} plate, so its "
                "log-probability cannot be split per data point; put every sample site "
                f"inside pyro.plate({data_plate!r}, x.shape[0])"
            )
        sites.append(site)
    return sites


def log_importance_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_particles: int,
    data_plate: str = "data",
) -> torch.Tensor:
    """log p(x, z_k) - log q(z_k | x) for K particles per image: shape ``(K, N)``.

    Differentiable (the IWAE objective takes gradients through it). Each site's
    log-probability is multiplied by its Pyro ``scale``, which is 1 unless a handler such as
    KL warm-up's :class:`~pyro_vae.objectives.LatentScale` set it.
    """
    return weights_and_elbo(model, guide, x, num_particles, data_plate, enumerate_sites=False)[0]


def check_pair(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    data_plate: str = "data",
    given: tuple[torch.Tensor, ...] = (),
):
    """Refuse, naming the site and the fix, a pair whose log-weights cannot be split per
    data point of ``x`` (a batch of the images, ``(n, ...)``; ``given``: the programs'
    further arguments, a cvae's labels).

    The estimate needs: every sample site inside the data plate, the plate as large as the
    batch and not subsampled, each site's batch shape no wider than the plate (its event
    dims declared), an observed site in the model, and the guide sampling exactly the
    model's latent sites. Discrete latent sites sampled by the guide are fine: importance
    sampling needs no reparameterization. Pyro's autoguides are refused: they are not
    amortized (their parameters are per data point of the batch they were fit to, or one
    q(z) for all), so they cannot propose for other images.
    """
    from pyro.infer.autoguide import AutoGuide

    if not x.is_floating_point():
        raise UserInputError(
            f"the images are {x.dtype}, not floats: give values in [0, 1] "
            "(x.float() / 255 for 8-bit images)"
        )
    if isinstance(guide, AutoGuide):
        raise UserInputError(
            f"{type(guide).__name__} is not an amortized guide: its q(z) does not depend on "
            "x (one set of parameters per data point of the batch it was fit to, or one for "
            "all), so it cannot propose latents for other images; write the guide as a "
            "function of x (an encoder network, as in Pyro's VAE tutorial)"
        )
    model_trace, guide_trace = _one_particle_traces(model, guide, x, data_plate, given)
    sites = {}
    for program, trace in (("guide", guide_trace), ("model", model_trace)):
        sites[program] = {
            site["name"]: site for site in _data_plate_sites(trace, program, data_plate)
        }
        for name, site in sites[program].items():
            _check_site(program, name, site, x.shape[0], data_plate)
    _check_latent_sites_match(sites["model"], sites["guide"], data_plate)


def _one_particle_traces(model, guide, x, data_plate, given):
    """The pair's traces for one particle, an error in them explained as a user's error."""
    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            return particle_traces(model, guide, x, 1, given=given)
    except UserInputError:
        raise
    except (ValueError, RuntimeError) as error:  # Pyro's shape checks, the networks' own
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise UserInputError(
            f"tracing the pair on a batch of {x.shape[0]} images failed: {first_line}; each "
            f"site needs the batch shape of plate {data_plate!r} (declare event dimensions "
            "with .to_event(...)), and the networks the images' shape"
        ) from error


def _check_site(program: str, name: str, site: dict, n: int, data_plate: str) -> None:
    """One sample site of ``program`` scores exactly the ``n`` images of the batch, one
    log-probability each."""
    frame = next(f for f in site["cond_indep_stack"] if f.name == data_plate)
    full_size = frame.full_size or frame.size
    if full_size != n or frame.size != n:
        subsampled = f", subsampled to {frame.size}," if frame.size != full_size else ""
        raise UserInputError(
            f"{program} site {name!r}: plate {data_plate!r} has size {full_size}"
            f"{subsampled} but the batch holds {n} images; the estimate scores exactly "
            f"the batch it is given: pyro.plate({data_plate!r}, x.shape[0]), with no "
            "subsample_size"
        )
    fn_shape = site["fn"].batch_shape + site["fn"].event_shape
    try:
        fits = torch.broadcast_shapes(site["value"].shape, fn_shape) == fn_shape
    except RuntimeError:
        fits = False
    if site["is_observed"] and not fits:
        raise UserInputError(
            f"{program} site {name!r}: its value, of shape {tuple(site['value'].shape)}, "
            f"does not fit its distribution's shape {tuple(fn_shape)}; give the model "
            "images of the shape it expects (or reshape them inside it)"
        )
    shape = site["fn"].log_prob(site["value"]).shape
    if len(shape) > 2 or (len(shape) == 2 and shape[-1] != n):
        raise UserInputError(
            f"{program} site {name!r} has a log-probability of shape {tuple(shape)}, "
            f"wider than the {data_plate!r} plate: declare its event dimensions, "
            "e.g. dist.Normal(loc, scale).to_event(1)"
        )


def _check_latent_sites_match(model_sites: dict, guide_sites: dict, data_plate: str) -> None:
    """The model observes at least one site, and the guide samples exactly its latent ones."""
    latent = {name for name, site in model_sites.items() if not site["is_observed"]}
    if len(latent) == len(model_sites):
        raise UserInputError(
            f"the model has no observed site in plate {data_plate!r}: condition its "
            "likelihood on the images, pyro.sample('obs', ..., obs=x)"
        )
    extra, missing = sorted(set(guide_sites) - latent), sorted(latent - set(guide_sites))
    if extra:
        raise UserInputError(
            f"guide site {extra[0]!r} is not a latent site of the model"
            + (" (the model observes it)" if extra[0] in model_sites else "")
            + "; the guide must sample exactly the model's latent sites, with the same names"
        )
    if missing:
        site = model_sites[missing[0]]
        discrete = site["fn"].support.is_discrete or "enumerate" in site["infer"]
        fix = (
            "enumerating a discrete site is not part of the estimate: sample it in the guide "
            "(say with dist.Categorical(logits=encoder(x)))"
            if discrete
            else "sample it in the guide, under the same name"
        )
        raise UserInputError(
            f"model site {missing[0]!r} is latent but the guide does not sample it; {fix}"
        )


def particle_traces(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_particles: int,
    around_guide: contextlib.AbstractContextManager | None = None,
    given: tuple[torch.Tensor, ...] = (),
    enumerate_sites: bool = False,
):
    """The guide's trace and the model's trace replayed on it, under a particle plate.

    ``around_guide``, a handler outside the guide's trace (so the trace records what it
    does to the values), such as the gradient scaling of the DReG objective. ``given``:
    the programs' arguments after ``x``. ``enumerate_sites``: the guide's sites marked for
    enumeration take all their values at once, at dim -3 (left of the particles).
    """
    if enumerate_sites:
        guide = poutine.enum(guide, first_available_dim=-3)
    with pyro.plate("particles", num_particles, dim=-2):
        with around_guide or contextlib.nullcontext():
            guide_trace = poutine.trace(guide).get_trace(x, *given)
        replayed = poutine.replay(model, trace=guide_trace)
        model_trace = poutine.trace(replayed).get_trace(x, *given)
    return model_trace, guide_trace


def weights_and_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_particles: int,
    data_plate: str = "data",
    given: tuple[torch.Tensor, ...] = (),
    enumerate_sites: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per particle and image, ``(K, N)`` each: the log-weight, and the ELBO's estimate.

    Without enumerated sites both are log p(x, z_k) - log q(z_k | x). With them (module
    docstring), the log-weight is log s_k = logsumexp_y log w_{y,k} and the ELBO's estimate
    Σ_y q(y|x) (log w_{y,k} - log q(y|x)).
    """
    model_trace, guide_trace = particle_traces(
        model, guide, x, num_particles, given=given, enumerate_sites=enumerate_sites
    )
    log_q_sampled, log_q_enumerated = 0, 0
    for site in _data_plate_sites(guide_trace, "guide", data_plate):
        log_q = site["scale"] * site["fn"].log_prob(site["value"])
        if site["infer"].get("_enumerate_dim") is not None:
            log_q_enumerated = log_q_enumerated + log_q
        else:
            log_q_sampled = log_q_sampled + log_q
    log_w = site_log_probs(model_trace, "model", data_plate) - log_q_sampled
    shape = (num_particles, x.shape[0])
    if not torch.is_tensor(log_q_enumerated):
        log_w = log_w.expand(shape)
        return log_w, log_w
    elbo = enumerated_expectation(log_q_enumerated, log_w - log_q_enumerated, shape)
    return torch.logsumexp(enumerated_values(log_w, shape), 0), elbo


def site_log_probs(trace, program: str, data_plate: str = "data") -> torch.Tensor:
    """Σ over the sample sites of a particle-plate ``trace`` of scale · log-probability, per
    particle and data point: shape ``(K, N)``."""
    total = 0
    for site in _data_plate_sites(trace, program, data_plate):
        total = total + site["scale"] * site["fn"].log_prob(site["value"])
    return total


class _OutputSizes(TorchDispatchMode):
    """Records how many values the largest tensor each operation returns holds."""

    def __init__(self):
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.sizes.append(max((t.numel() for t in _tensors(out)), default=0))
        return out


def _tensors(out) -> Iterator[torch.Tensor]:
    """The tensors in an operation's output (a tensor, or tuples and lists of them)."""
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for item in out:
            yield from _tensors(item)


def values_per_draw(
    model: Callable,
    guide: Callable,
    image: torch.Tensor,
    data_plate: str = "data",
    given: tuple[torch.Tensor, ...] = (),
    enumerate_sites: bool = True,
) -> int:
    """How many values one more particle of one image adds to the largest tensor made while
    scoring it: the unit the memory budget of :func:`importance_log_likelihood` counts.

    The image (shape ``(1, ...)``) is scored with one and with two particles and the
    outputs of the same operations compared, so a tensor that does not grow with the
    particles (a VampPrior's pass over its pseudo-inputs) is not counted. At least the
    image's pixel count.
    """
    runs = []
    for particles in (1, 2):
        recorder = _OutputSizes()
        with torch.no_grad(), pyro.validation_enabled(False), recorder:
            weights_and_elbo(model, guide, image, particles, data_plate, given, enumerate_sites)
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
    model: Callable,
    guide: Callable,
    images: torch.Tensor,
    num_samples: int = 5000,
    bound_sizes: Sequence[int] = BOUND_SIZES,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    seed: int = EVAL_SEED,
    labels: torch.Tensor | None = None,
    progress=None,
    group: ProcessGroup = SINGLE,
    data_plate: str = "data",
    condition_on_labels: bool = False,
    enumerate_sites: bool = True,
) -> LogLikelihoodEstimate:
    """Estimate log p(x) for every image in ``images`` (floats, ``(N, ...)``).

    ``model`` and ``guide`` are any Pyro pair called as ``model(x)`` and ``guide(x)`` on a
    batch ``x`` of the images: the registry's modules, bound methods of an ``nn.Module``
    (Pyro's VAE tutorial), ``PyroModule``s, or plain functions of ``pyro.param``s. Every
    sample site must sit in ``pyro.plate(data_plate, x.shape[0])``; :func:`check_pair` says
    what else is needed, and refuses a pair that lacks it. Modules found are put in eval
    mode and restored.

    Images are taken in batches and particles in chunks so that no tensor holds more than
    ``max_elements`` values (particles x images x :func:`values_per_draw`, which is the pixels
    for an MLP and a feature map for a conv net); all K log-weights of a data point
    are kept, in fp32, for the bounds and k̂. ``progress(n)`` is called as images finish.

    Under torchrun (``group``, ``pyro_vae.distributed``) the ranks take every N-th batch
    and every rank receives all images' values; the result equals one process's.

    ``labels`` (one per image) go into the per-image CSV, and with ``condition_on_labels``
    to the programs too, ``model(x, y)`` and ``guide(x, y)``: the estimate is then of
    log p(x | y) (a cvae). Guide sites marked for enumeration are summed out exactly
    (module docstring); ``enumerate_sites=False`` samples them instead (a noisier,
    brute-force estimate of the same number).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise UserInputError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if images.ndim < 1 or images.shape[0] < 1:
        raise UserInputError(
            f"images must be a non-empty (N, ...) tensor, got {tuple(images.shape)}"
        )
    if condition_on_labels and (labels is None or labels.shape[:1] != images.shape[:1]):
        raise UserInputError("condition_on_labels needs one label per image (labels=...)")
    sizes = [k for k in bound_sizes if k <= num_samples]

    def given(start: int, stop: int) -> tuple[torch.Tensor, ...]:
        return (labels[start:stop],) if condition_on_labels else ()

    done: list[tuple[int, dict[str, torch.Tensor]]] = []  # (batch number, its columns)
    with eval_mode(model, guide):
        with fixed_seed(seed, images.device):
            check_pair(model, guide, images[:2], data_plate, given(0, 2))
            per_draw = values_per_draw(
                model, guide, images[:1], data_plate, given(0, 1), enumerate_sites
            )
        batch = max(1, min(images.shape[0], max_elements // (num_samples * per_draw)))
        chunk = max(1, min(num_samples, max_elements // (batch * per_draw)))
        starts = range(0, images.shape[0], batch)
        for number in range(group.rank, len(starts), group.world_size):
            start = starts[number]
            x = images[start : start + batch]
            draws = partial(
                weights_and_elbo,
                model,
                guide,
                x,
                data_plate=data_plate,
                given=given(start, start + batch),
                enumerate_sites=enumerate_sites,
            )
            # Each batch draws from a stream of its own, named by its first image: an image's
            # estimate depends on no other batch, and ranks sharing the batches out give what
            # one process gives.
            with fixed_seed(stream_seed(seed, start), images.device):
                columns = _batch_columns(draws, num_samples, chunk, sizes)
            done.append((number, columns))
            if progress is not None:
                progress(x.shape[0] * group.world_size)
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
    draws: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    num_samples: int,
    chunk: int,
    sizes: list,
) -> dict[str, torch.Tensor]:
    """The per-image values of one batch from all K log-weights and ELBO estimates, which
    ``draws(k)`` returns for k particles, ``(k, N)`` each (on the CPU, for gathering)."""
    with pyro.validation_enabled(False):
        parts = [draws(min(chunk, num_samples - k0)) for k0 in range(0, num_samples, chunk)]
    log_w = torch.cat([log_w for log_w, _ in parts])
    elbo = torch.cat([elbo for _, elbo in parts])
    normalized = log_w - torch.logsumexp(log_w, 0)
    columns = {
        "lpx": log_mean_exp(log_w, 0),
        "elbo": elbo.mean(0),
        "ess": torch.exp(-torch.logsumexp(2 * normalized, 0)),
        **{f"L_{k}": iwae_bound(log_w, k) for k in sizes},
    }
    columns = {key: value.cpu() for key, value in columns.items()}
    columns["khat"] = torch.from_numpy(psis_khat(log_w.T.cpu().numpy()))
    return columns
