"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC) for any Pyro pair.

AIS (Neal 2001, "Annealed importance sampling") moves C chains per image through
intermediate densities from a normalized start r(z) to the unnormalized posterior
p(x, z), whose normalizer is p(x):

    log f_β(z) = (1 - β) log r(z) + β log p(x, z),    0 = β_0 < β_1 < ... < β_T = 1

with r(z) = q(z | x), the guide (``start="guide"``, the default), or r(z) = p(z), the
prior (``start="prior"``; then f_β = p(z) p(x|z)^β). Each chain starts at z_0 ~ r and
accumulates

    log w = Σ_{t=1..T} (β_t - β_{t-1}) (log p(x, z_{t-1}) - log r(z_{t-1})),

with z_t drawn from a transition that leaves f_{β_t} invariant, for t < T. Then E[w] = p(x),
and log p̂(x) = logsumexp_c log w_c - log C is a stochastic lower bound of log p(x) that
tightens as T grows. With T = 1 this is importance sampling from r with K = C.

The transitions are Hamiltonian Monte Carlo (``leapfrog_steps`` leapfrog steps of size ε,
then a Metropolis correction), as Wu et al. (2017, "On the quantitative analysis of
decoder-based generative models") used to evaluate VAEs, with a step size ε per image and
transition adapted towards ``target_acceptance`` as they did, but in a pilot run: its
``pilot_chains`` chains each adapt their own ε (after each transition, ε ← ε · exp(0.2
(a - target)), a that transition's acceptance probability), and the estimate's chains
then use, at each transition, the pilot's ε for that image (its geometric mean over the
pilot's chains). Adapting the estimate's chains themselves would bias it: a chain's next ε
would depend on its current state (through the acceptance of the move that reached it),
and an MH kernel whose step size depends on the state it starts from does not leave its
target invariant (measured here: +0.1 nats on a bimodal posterior,
tests/test_ais.py). With the pilot's schedule fixed given the image, every transition of
the estimate is an HMC kernel invariant for f_{β_t}, which is all the argument for
E[w] = p(x) asks (Neal 2001, section 2).

The log densities come from Pyro traces of the pair: the model and the guide conditioned
on the latent values being moved (``poutine.condition``), under a plate of the chains at
dim -2, so every model the registry builds (the HVAE's two layers, the VampPrior, flow
priors, the cvae with its labels) and any user pair that
:func:`pyro_vae.importance.importance_log_likelihood` accepts work unchanged. A discrete
latent site that the guide marks for enumeration (m2's label y) is summed out exactly
inside the target: log p(x, z) = log Σ_y p(x, y, z), and log q(z|x) = log Σ_y q(y|x)
q(z|x, y). Any other discrete latent site is refused, naming it.

BDMC (Grosse, Ghahramani & Adams 2015, "Sandwiching the marginal likelihood using
bidirectional Monte Carlo"): on images simulated from the model, z* ~ p(z), x ~ p(x|z*),
forward AIS gives a stochastic lower bound of log p(x), and AIS run backwards (β from 1 to
0), started at the exact posterior sample z*, a stochastic upper bound:
log p̂_up = -(logsumexp_c log w_c^rev - log C), with E[w^rev] = 1/p(x).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import EVAL_SEED, enumerated_values, eval_mode, fixed_seed, stream_seed
from pyro_vae.importance import (
    DEFAULT_MAX_ELEMENTS,
    check_pair,
    log_mean_exp,
    site_log_probs,
    values_per_draw,
)

SCHEDULES = ("sigmoid", "linear")
STARTS = ("guide", "prior")
CHAINS_DIM = -2  # the chains' plate; enumerated sites go left of it
ADAPT_RATE = 0.2
STEP_SIZE_RANGE = (1e-4, 1.0)


def annealing_schedule(num_steps: int, kind: str = "sigmoid", delta: float = 4.0) -> torch.Tensor:
    """β_0 = 0 < β_1 < ... < β_T = 1, T = ``num_steps``: ``linear``, t/T, or ``sigmoid``,
    the schedule of Grosse et al. (2015, section 5): β̃_t = σ(δ (2t/T - 1)) rescaled to run
    from 0 to 1, which spends more steps near both ends."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise UserInputError(
            f"the number of annealing steps must be an integer >= 1, got {num_steps!r}"
        )
    if kind not in SCHEDULES:
        raise UserInputError(f"unknown schedule {kind!r}; valid schedules: {', '.join(SCHEDULES)}")
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    if kind == "linear":
        return t
    tilde = torch.sigmoid(delta * (2 * t - 1))
    return (tilde - tilde[0]) / (tilde[-1] - tilde[0])


# ---------------------------------------------------------------------------------------------
# The target: the pair's log densities at given latent values


@dataclass
class PairDensities:
    """log p(x, z) and log r(z) of a model/guide pair at continuous latent values ``z`` (a
    dict of site name to ``(C, N, *event)`` tensors), per chain and image: ``(C, N)`` each.

    ``latent``: the continuous latent sites (moved by HMC); ``enumerated``: the discrete ones
    summed out (marked for enumeration in the guide)."""

    model: Callable
    guide: Callable
    x: torch.Tensor
    given: tuple[torch.Tensor, ...]
    start: str
    num_chains: int
    latent: tuple[str, ...]
    enumerated: tuple[str, ...]
    data_plate: str = "data"

    @classmethod
    def of(cls, model, guide, x, given, start, num_chains, data_plate="data") -> PairDensities:
        """Read the latent sites off one trace of the pair, refusing a discrete site that
        cannot be summed out."""
        if start not in STARTS:
            raise UserInputError(f"unknown start {start!r}; valid starts: {', '.join(STARTS)}")
        with torch.no_grad(), pyro.validation_enabled(False), pyro.plate("chains", 1, dim=-2):
            guide_trace = poutine.trace(guide).get_trace(x, *given)
        latent, enumerated = [], []
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
                continue
            if site["fn"].support.is_discrete:
                if site["infer"].get("enumerate") != "parallel":
                    raise UserInputError(
                        f"latent site {name!r} is discrete: AIS moves continuous latents by "
                        "HMC and sums a discrete site out only where the guide marks it "
                        "infer={'enumerate': 'parallel'} (as m2's label is)"
                    )
                enumerated.append(name)
            else:
                latent.append(name)
        if not latent:
            raise UserInputError("the pair has no continuous latent site for AIS to move")
        return cls(model, guide, x, given, start, num_chains, tuple(latent), tuple(enumerated),
                   data_plate)  # fmt: skip

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_chains, self.x.shape[0])

    def draw_start(self) -> dict[str, torch.Tensor]:
        """z_0 ~ r: the guide's draws (a discrete site drawn and dropped: z is then a draw of
        the mixture Σ_y q(y|x) q(z|x,y)), or the prior's, by running the model forward."""
        program = self.guide if self.start == "guide" else self.model
        with torch.no_grad(), pyro.plate("chains", self.num_chains, dim=CHAINS_DIM):
            trace = poutine.trace(program).get_trace(self.x, *self.given)
        return {name: self._full(trace.nodes[name]["value"]) for name in self.latent}

    def _full(self, value: torch.Tensor) -> torch.Tensor:
        event = value.shape[value.dim() - self._event_dims(value) :]
        return value.expand(*self.shape, *event).clone()

    def _event_dims(self, value: torch.Tensor) -> int:
        # (C, N, *event) or broadcastable (1, N, *event): the event dims follow the two
        return max(value.dim() - 2, 0)

    def terms(self, z: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x, z), log r(z)), each ``(C, N)``, differentiable in ``z``."""
        guide = poutine.condition(self.guide, data=z)
        if self.enumerated:
            guide = poutine.enum(guide, first_available_dim=CHAINS_DIM - 1)
        with pyro.plate("chains", self.num_chains, dim=CHAINS_DIM):
            guide_trace = poutine.trace(guide).get_trace(self.x, *self.given)
            model = poutine.replay(poutine.condition(self.model, data=z), trace=guide_trace)
            model_trace = poutine.trace(model).get_trace(self.x, *self.given)
        joint = site_log_probs(model_trace, "model", self.data_plate)
        if self.start == "guide":
            start = site_log_probs(guide_trace, "guide", self.data_plate)
        else:
            names = set(self.latent) | set(self.enumerated)
            start = sum(
                site["scale"] * site["fn"].log_prob(site["value"])
                for name, site in model_trace.nodes.items()
                if name in names and site["type"] == "sample"
            )
        return self._summed_out(joint), self._summed_out(start)

    def _summed_out(self, value: torch.Tensor) -> torch.Tensor:
        """Σ over the enumerated values (log-sum-exp), as ``(C, N)``."""
        if not self.enumerated:
            return value.expand(self.shape)
        return torch.logsumexp(enumerated_values(value, self.shape), 0)


# ---------------------------------------------------------------------------------------------
# Hamiltonian Monte Carlo on a dict of latent tensors, one step size per chain and image


LogDensity = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, tuple]]


def _with_gradient(log_density: LogDensity, z: dict[str, torch.Tensor]):
    """log f(z) ``(C, N)``, its gradient in each z, and the density's extra outputs."""
    leaves = {name: value.detach().requires_grad_(True) for name, value in z.items()}
    with torch.enable_grad():
        value, extra = log_density(leaves)
        grads = torch.autograd.grad(value.sum(), list(leaves.values()))
    grads = {name: g.nan_to_num(0.0) for name, g in zip(leaves, grads)}
    return value.detach(), grads, tuple(t.detach() for t in extra)


def _expand(step: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return step.reshape(*step.shape, *([1] * (value.dim() - step.dim())))


def hmc_transition(
    log_density: LogDensity,
    z: dict[str, torch.Tensor],
    step_size: torch.Tensor,
    leapfrog_steps: int,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, tuple]:
    """One HMC transition of every chain and image at once: momenta p ~ N(0, I), then
    ``leapfrog_steps`` leapfrog steps of size ``step_size`` (shape ``(C, N)``), then the
    Metropolis correction on H = -log f(z) + |p|²/2 (a non-finite proposal is rejected).

    ``log_density(z)`` returns (log f(z) of shape ``(C, N)``, extra tensors of that shape).
    Returns the new z, each chain's acceptance probability, and (log f, gradient, extra) at
    the new z."""
    value, grads, extra = _with_gradient(log_density, z)
    momentum = {name: torch.randn_like(v) for name, v in z.items()}

    def kinetic(p):
        return sum(0.5 * q.pow(2).flatten(2).sum(-1) for q in p.values())

    start_energy = -value + kinetic(momentum)
    position, p = dict(z), dict(momentum)
    new_value, new_grads, new_extra = value, grads, extra
    for _ in range(leapfrog_steps):
        p = {k: p[k] + 0.5 * _expand(step_size, p[k]) * new_grads[k] for k in p}
        position = {k: position[k] + _expand(step_size, p[k]) * p[k] for k in position}
        new_value, new_grads, new_extra = _with_gradient(log_density, position)
        p = {k: p[k] + 0.5 * _expand(step_size, p[k]) * new_grads[k] for k in p}
    log_accept = (start_energy - (-new_value + kinetic(p))).nan_to_num(float("-inf"))
    accept_probability = log_accept.clamp(max=0).exp()
    accepted = torch.rand_like(accept_probability) < accept_probability

    def pick(new, old):
        return torch.where(_expand(accepted, new), new, old)

    z = {k: pick(position[k], z[k]) for k in z}
    state = (
        pick(new_value, value),
        {k: pick(new_grads[k], grads[k]) for k in grads},
        tuple(pick(n, o) for n, o in zip(new_extra, extra)),
    )
    return z, accept_probability, state


def adapt_step_size(
    step_size: torch.Tensor, acceptance: torch.Tensor, target: float
) -> torch.Tensor:
    """ε · exp(ADAPT_RATE (a - target)), kept within STEP_SIZE_RANGE (module docstring)."""
    return (step_size * torch.exp(ADAPT_RATE * (acceptance - target))).clamp(*STEP_SIZE_RANGE)


# ---------------------------------------------------------------------------------------------
# Annealing


@dataclass
class AnnealingSettings:
    num_steps: int = 500
    num_chains: int = 16
    leapfrog_steps: int = 10
    schedule: str = "sigmoid"
    start: str = "guide"
    step_size: float = 0.05
    target_acceptance: float = 0.65
    pilot_chains: int = 4

    def check(self) -> None:
        for name in ("num_steps", "num_chains", "leapfrog_steps", "pilot_chains"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"{name} must be an integer >= 1, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise UserInputError(
                f"unknown schedule {self.schedule!r}; valid schedules: {', '.join(SCHEDULES)}"
            )
        if self.start not in STARTS:
            raise UserInputError(f"unknown start {self.start!r}; valid starts: {', '.join(STARTS)}")
        if not (0 < self.step_size and 0 < self.target_acceptance < 1):
            raise UserInputError("step_size must be > 0 and target_acceptance in (0, 1)")


def anneal(
    densities: PairDensities,
    z: dict[str, torch.Tensor],
    betas: torch.Tensor,
    settings: AnnealingSettings,
    step_sizes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run every chain along ``betas`` from ``z``: the log-weights Σ (β_t - β_{t-1})
    (log p(x, z_{t-1}) - log r(z_{t-1})) and the mean acceptance probability, ``(C, N)``
    each, and the step sizes used, ``(T - 1, N)``. ``betas`` may run from 0 to 1 (forward
    AIS) or from 1 to 0 (reverse, BDMC).

    ``step_sizes`` (per transition and image) fixes the transitions; without it each chain
    adapts its own (module docstring), which is what a pilot run does: its step sizes,
    averaged over its chains in log space, are returned for the estimate's run."""
    shape = densities.shape
    device = densities.x.device
    log_w = torch.zeros(shape, dtype=torch.float64, device=device)
    step = torch.full(shape, settings.step_size, device=device)
    accepted = torch.zeros(shape, device=device)
    used = []

    def density_at(beta: float) -> LogDensity:
        def log_f(values):
            joint, start = densities.terms(values)
            return (1 - beta) * start + beta * joint, (joint, start)

        return log_f

    with torch.no_grad():
        joint, start = densities.terms(z)
    transitions = len(betas) - 2  # none after the last weight
    for t in range(1, len(betas)):
        beta_before, beta = float(betas[t - 1]), float(betas[t])
        log_w += (beta - beta_before) * (joint - start).double()
        if t == len(betas) - 1:
            break
        if step_sizes is not None:
            step = step_sizes[t - 1].expand(shape)
        used.append(step.log().mean(0).exp())
        z, acceptance, (_, _, (joint, start)) = hmc_transition(
            density_at(beta), z, step, settings.leapfrog_steps
        )
        accepted += acceptance
        if step_sizes is None:
            step = adapt_step_size(step, acceptance, settings.target_acceptance)
    schedule = torch.stack(used) if used else torch.empty(0, shape[1], device=device)
    return log_w, accepted / max(transitions, 1), schedule


def piloted_anneal(
    densities: PairDensities,
    start: dict[str, torch.Tensor] | None,
    betas: torch.Tensor,
    settings: AnnealingSettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A pilot run of ``settings.pilot_chains`` adapting chains finds each image's step size
    per transition; the estimate's chains then anneal with those, fixed (module docstring).
    ``start``: the chains' start (an exact posterior sample, BDMC's reverse run), or None
    for draws from r. Returns the log-weights and mean acceptance, ``(C, N)`` each."""

    def begin(d: PairDensities) -> dict[str, torch.Tensor]:
        if start is None:
            return d.draw_start()
        return {k: v[:1].expand(d.num_chains, *v.shape[1:]).clone() for k, v in start.items()}

    step_sizes = None
    if len(betas) > 2:  # transitions to find step sizes for (one step: importance sampling)
        pilot = dataclasses.replace(densities, num_chains=settings.pilot_chains)
        _, _, step_sizes = anneal(pilot, begin(pilot), betas, settings)
    log_w, acceptance, _ = anneal(densities, begin(densities), betas, settings, step_sizes)
    return log_w, acceptance


# ---------------------------------------------------------------------------------------------
# The estimators


@dataclass
class AISEstimate:
    """Per image: log p̂(x) (log-mean-exp of the chains' weights), its standard error over
    the chains (delta method: std(w) / (√C mean(w))), the ESS of the final weights
    (Σw)²/Σw² of C, and the mean HMC acceptance probability; and the seconds taken."""

    settings: AnnealingSettings
    log_likelihood: np.ndarray
    standard_error: np.ndarray
    ess: np.ndarray
    acceptance: np.ndarray
    seconds: float
    labels: np.ndarray | None = None
    summary: dict = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.log_likelihood)
        spread = float(np.std(self.log_likelihood, ddof=1)) if n > 1 else float("nan")
        self.summary = {
            "method": "ais",
            **vars(self.settings),
            "num_images": n,
            "log_likelihood": float(np.mean(self.log_likelihood)),
            "standard_error": spread / math.sqrt(n) if n > 1 else None,
            "chain_standard_error_mean": float(np.mean(self.standard_error)),
            "ess_mean": float(np.mean(self.ess)),
            "acceptance_mean": float(np.mean(self.acceptance)),
            "seconds": self.seconds,
        }


def chain_statistics(log_w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """From ``(C, N)`` log-weights: log p̂ per image, its standard error over the chains,
    and the ESS of the weights."""
    log_w = log_w.double()
    estimate = log_mean_exp(log_w, 0)
    w = (log_w - log_w.max(0).values).exp()
    chains = log_w.shape[0]
    spread = w.std(0, unbiased=True) if chains > 1 else torch.full_like(estimate, float("nan"))
    standard_error = spread / (math.sqrt(chains) * w.mean(0))
    ess = w.sum(0).pow(2) / w.pow(2).sum(0)
    return estimate, standard_error, ess


def _batch_size(model, guide, images, given_first, data_plate, chains, max_elements) -> int:
    per_draw = values_per_draw(model, guide, images[:1], data_plate, given_first)
    # HMC keeps a graph for the gradient: budget four times a forward pass's values
    return max(1, min(images.shape[0], max_elements // (4 * chains * per_draw)))


def ais_log_likelihood(
    model: Callable,
    guide: Callable,
    images: torch.Tensor,
    settings: AnnealingSettings | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    seed: int = EVAL_SEED,
    labels: torch.Tensor | None = None,
    progress=None,
    data_plate: str = "data",
    condition_on_labels: bool = False,
) -> AISEstimate:
    """AIS estimate of log p(x) for every image in ``images`` (module docstring), with the
    pair convention, memory budget and seed handling of
    :func:`pyro_vae.importance.importance_log_likelihood`: any Pyro pair called as
    ``model(x)``, ``guide(x)`` (``model(x, y)`` with ``condition_on_labels``), images in
    batches within ``max_elements`` values, each batch's draws from a stream of its own."""
    settings = settings or AnnealingSettings()
    settings.check()
    if images.ndim < 1 or images.shape[0] < 1:
        raise UserInputError(
            f"images must be a non-empty (N, ...) tensor, got {tuple(images.shape)}"
        )
    if condition_on_labels and (labels is None or labels.shape[:1] != images.shape[:1]):
        raise UserInputError("condition_on_labels needs one label per image (labels=...)")

    def given(start: int, stop: int) -> tuple[torch.Tensor, ...]:
        return (labels[start:stop],) if condition_on_labels else ()

    betas = annealing_schedule(settings.num_steps, settings.schedule)
    columns = []
    began = time.perf_counter()
    with eval_mode(model, guide), pyro.validation_enabled(False):
        with fixed_seed(seed, images.device):
            check_pair(model, guide, images[:2], data_plate, given(0, 2))
            batch = _batch_size(model, guide, images, given(0, 1), data_plate,
                                settings.num_chains, max_elements)  # fmt: skip
        for start in range(0, images.shape[0], batch):
            x = images[start : start + batch]
            densities = PairDensities.of(
                model, guide, x, given(start, start + batch), settings.start,
                settings.num_chains, data_plate,
            )  # fmt: skip
            with fixed_seed(stream_seed(seed, start), images.device):
                log_w, acceptance = piloted_anneal(densities, None, betas, settings)
            columns.append((*chain_statistics(log_w), acceptance.mean(0)))
            if progress is not None:
                progress(x.shape[0])
    joined = [torch.cat([c[i] for c in columns]).double().cpu().numpy() for i in range(4)]
    return AISEstimate(
        settings, *joined, seconds=time.perf_counter() - began,
        labels=None if labels is None else labels.cpu().numpy(),
    )  # fmt: skip


@dataclass
class BDMCResult:
    """On images simulated from the model, per number of annealing steps: the forward
    (lower) and reverse (upper) estimates per image, and the IS estimate on the same images."""

    settings: AnnealingSettings  # num_steps aside, the settings of every run
    steps: list[int]
    lower: dict[int, np.ndarray]
    upper: dict[int, np.ndarray]
    importance: np.ndarray | None
    num_samples: int | None
    seconds: float

    @property
    def summary(self) -> dict:
        rows = []
        for steps in self.steps:
            lower, upper = float(self.lower[steps].mean()), float(self.upper[steps].mean())
            row = {"steps": steps, "lower": lower, "upper": upper, "gap": upper - lower}
            if self.importance is not None:
                row["importance_minus_lower"] = float(self.importance.mean()) - lower
                row["upper_minus_importance"] = upper - float(self.importance.mean())
            rows.append(row)
        n = len(next(iter(self.lower.values())))
        settings = {k: v for k, v in vars(self.settings).items() if k != "num_steps"}
        return {"method": "bdmc", **settings, "num_images": n,
                "num_samples": self.num_samples, "rows": rows, "seconds": self.seconds}  # fmt: skip


def simulate(model: Callable, num_images: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """N images from the model, z ~ p(z) and x ~ p(x|z), and the latent values that made
    them: ``model(num_samples=N)`` must generate (the registry's models do)."""
    try:
        with torch.no_grad():
            trace = poutine.trace(model).get_trace(num_samples=num_images)
    except TypeError as error:
        raise UserInputError(
            "BDMC simulates images from the model, which needs model(num_samples=N) to "
            f"generate them ({error})"
        ) from None
    observed = [s for s in trace.nodes.values() if s["type"] == "sample" and s["name"] == "x"]
    if not observed:
        raise UserInputError("BDMC needs the model's observed site to be named 'x'")
    latent = {
        name: site["value"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site) and name != "x"
    }
    return observed[0]["value"], latent


def bdmc(
    model: Callable,
    guide: Callable,
    num_images: int = 100,
    steps: Sequence[int] = (10, 100, 1000),
    settings: AnnealingSettings | None = None,
    num_samples: int | None = 5000,
    seed: int = EVAL_SEED,
    data_plate: str = "data",
) -> BDMCResult:
    """BDMC on ``num_images`` images simulated from the model (module docstring): for each
    number of annealing steps, forward AIS (a stochastic lower bound of each log p(x)) and
    reverse AIS from the exact posterior sample (a stochastic upper bound); with
    ``num_samples``, the guide's importance-sampled estimate on the same images, whose
    place inside the sandwich says whether K was enough."""
    from pyro_vae.importance import importance_log_likelihood

    settings = settings or AnnealingSettings()
    settings.check()
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise UserInputError(f"num_images must be an integer >= 1, got {num_images!r}")
    began = time.perf_counter()
    lower, upper = {}, {}
    with eval_mode(model, guide), pyro.validation_enabled(False):
        with fixed_seed(seed, torch.device("cpu")):
            x, truth = simulate(model, num_images)
        densities = PairDensities.of(model, guide, x, (), settings.start, settings.num_chains,
                                     data_plate)  # fmt: skip
        if densities.enumerated:
            raise UserInputError("BDMC needs every latent site continuous (the exact posterior "
                                 "sample of an enumerated site is not kept)")  # fmt: skip
        exact = {name: truth[name].expand(*densities.shape, *truth[name].shape[1:]).clone()
                 for name in densities.latent}  # fmt: skip
        for count in steps:
            run = AnnealingSettings(**{**vars(settings), "num_steps": count})
            betas = annealing_schedule(count, run.schedule)
            with fixed_seed(stream_seed(seed, count, 0), x.device):
                forward, _ = piloted_anneal(densities, None, betas, run)
            with fixed_seed(stream_seed(seed, count, 1), x.device):
                reverse, _ = piloted_anneal(densities, exact, betas.flip(0), run)
            lower[count] = log_mean_exp(forward, 0).cpu().numpy()
            upper[count] = (-log_mean_exp(reverse, 0)).cpu().numpy()
    importance = None
    if num_samples:
        importance = importance_log_likelihood(
            model, guide, x, num_samples, seed=seed, data_plate=data_plate
        ).log_likelihood
    return BDMCResult(settings, list(steps), lower, upper, importance, num_samples,
                      time.perf_counter() - began)  # fmt: skip
