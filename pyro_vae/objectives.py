"""Training objectives beyond Pyro's stock ELBOs, and KL warm-up.

- :class:`IWAE_ELBO`: the importance-weighted bound, per data point.
- :class:`DReG_IWAE_ELBO`: the same bound, with doubly reparameterized guide gradients.
- :class:`STL_ELBO`: the ELBO, with "sticking the landing" guide gradients.
- :class:`LatentScale`: ``poutine.scale`` restricted to continuous latent sites; on model
  and guide it weights the ELBO's KL term by β (KL warm-up).
- :func:`analytic_kl_pairs`: which latent sites TraceMeanField_ELBO can score in closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro.infer
import torch
from pyro import poutine
from pyro.poutine.scale_messenger import ScaleMessenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from pyro_vae.errors import UserInputError
from pyro_vae.importance import log_importance_weights, particle_traces, site_log_probs


class IWAE_ELBO(pyro.infer.RenyiELBO):  # noqa: N801 - named like Pyro's Trace_ELBO
    """The importance-weighted autoencoder bound (Burda et al. 2016), per data point:

        L_K = Σ_n E[ log (1/K) Σ_k p(x_n, z_nk) / q(z_nk | x_n) ],   z_nk ~ q(z | x_n)

    L_1 is the ELBO and L_K rises towards log p(x) as K grows. Pyro's
    ``RenyiELBO(alpha=0)`` forms the same bound (it keeps plates common to every site, such
    as the data plate, out of its sums), but it has no ``differentiable_loss``, which
    Pyro's ``ELBO()(model, guide)`` module and a torch optimizer need; this subclass adds it.
    The K particles run as one vectorized trace under a particle plate
    (:func:`~pyro_vae.importance.log_importance_weights`), and a site outside the data plate
    is refused rather than summed into a joint weight. Gradients are pathwise, so the guide
    must be reparameterized (every family here is).
    """

    def __init__(self, num_particles: int = 5):
        super().__init__(
            alpha=0, num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1
        )

    def differentiable_loss(
        self, model: Callable, guide: Callable, x: torch.Tensor
    ) -> torch.Tensor:
        log_w = log_importance_weights(model, guide, x, self.num_particles)
        return -(torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()

    def loss(self, model: Callable, guide: Callable, x: torch.Tensor) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, x).item()

    def loss_and_grads(self, model: Callable, guide: Callable, x: torch.Tensor) -> float:
        loss = self.differentiable_loss(model, guide, x)
        loss.backward()
        return loss.item()


def _fixed_code_log_q(guide: Callable, guide_trace, x: torch.Tensor, particles: int):
    """log q_φ(z̄ | x) per particle and data point at the trace's codes held fixed (detached):
    its gradient is the score ∂log q_φ(z)/∂φ at fixed z, and nothing else.

    With one latent site, its distribution (a function of x and φ alone) scores the fixed
    code. With several, the guide is replayed on the fixed codes, so that a layer
    conditioned on another (the hierarchical guide's q(z2|z1)) is conditioned on the fixed
    code too: the joint q's score. A flow guide scores a code it did not itself just
    produce through its inverse, so the families without one (planar, radial) cannot take
    these gradients.
    """
    fixed = guide_trace.copy()
    latents = 0
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample":
            fixed.nodes[name] = {**site, "value": site["value"].detach()}
            latents += not site["is_observed"] and not site_is_subsample(site)
    if latents > 1:
        with pyro.plate("particles", particles, dim=-2):
            fixed = poutine.trace(poutine.replay(guide, trace=fixed)).get_trace(x)
    return _scored(lambda: site_log_probs(fixed, "guide"))


def _scored(log_prob: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``log_prob()``, or one clear error where a flow guide has no inverse to score with."""
    try:
        return log_prob()
    except (NotImplementedError, KeyError) as error:
        raise UserInputError(
            f"this guide cannot score a code it did not just draw ({error}); the stl and "
            "iwae-dreg gradients need its log-density at any code (planar and radial flows "
            "have no inverse): choose another --guide or --elbo"
        ) from None


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``weights`` (filled in later)."""

    @staticmethod
    def forward(ctx, value, holder):
        ctx.holder = holder
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        weights = ctx.holder["weights"]
        return grad * weights.reshape(weights.shape + (1,) * (grad.dim() - weights.dim())), None


class _HeldWeights(torch.autograd.Function):
    """Identity that puts its input in ``holder["weights"]``, for :class:`_ScaleGradient`'s
    backward to read. An autograd Function rather than a plain assignment so that a JIT
    trace records it (as a Python op) and every replay stores that replay's weights. The
    holder keeps the latest forward's weights only: each loss must be differentiated before
    the next is computed, as an SVI step does."""

    @staticmethod
    def forward(ctx, weights, holder):
        holder["weights"] = weights
        return weights.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _HookLatents(poutine.messenger.Messenger):
    """Passes each latent value of the guide through ``hook`` as it is sampled, so that every
    later use of it (the guide's next layer, the model's replay) sees the hooked value."""

    def __init__(self, hook: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.hook = hook

    def _postprocess_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            msg["value"] = self.hook(msg["value"])


class STL_ELBO(IWAE_ELBO):  # noqa: N801 - named like Pyro's Trace_ELBO
    """The ELBO with Roeder et al. (2017)'s "sticking the landing" gradient:

        loss  = -Σ_n (1/K) Σ_k [log p(x_n, z_nk) - log q_φ(z_nk | x_n)],  z_nk = z_φ(ε_nk)
        ∇_φ   drops the score term ∂log q_φ(z)/∂φ at fixed z (zero in expectation), keeping
              the path through z; ∇_θ is Trace_ELBO's.

    Unbiased for the same ELBO as Trace_ELBO; where q equals the posterior, log p(x, z) -
    log q(z|x) = log p(x) for every z and the guide's gradient is exactly zero, draw for draw.
    Computed as -(1/K) Σ_k [log w_k + log q_φ(z̄_k) - log q_φ(z̄_k).detach()] with z̄ the
    codes held fixed, which has the ELBO's value and the STL gradient. Needs a
    reparameterized guide whose density can score any code (not planar or radial flows).
    """

    def __init__(self, num_particles: int = 1):
        super().__init__(num_particles=num_particles)

    def differentiable_loss(
        self, model: Callable, guide: Callable, x: torch.Tensor
    ) -> torch.Tensor:
        k = self.num_particles
        model_trace, guide_trace = particle_traces(model, guide, x, k)
        log_w = site_log_probs(model_trace, "model") - site_log_probs(guide_trace, "guide")
        score = _fixed_code_log_q(guide, guide_trace, x, k)
        return -(log_w + score - score.detach()).mean(0).sum()


class DReG_IWAE_ELBO(IWAE_ELBO):  # noqa: N801 - named like Pyro's Trace_ELBO
    """The IWAE bound with Tucker et al. (2019)'s doubly reparameterized gradients (DReG):

        loss  = -Σ_n log (1/K) Σ_k w_nk,   w_nk = p(x_n, z_nk) / q_φ(z_nk | x_n)
        ∇_θ   = -Σ_n Σ_k w̃_nk ∇_θ log w_nk                            (IWAE's own)
        ∇_φ   = -Σ_n Σ_k w̃_nk² ∂log w_nk/∂z_nk ∂z_nk/∂φ,   w̃_nk = w_nk / Σ_j w_nj

    The IWAE gradient's score term Σ w̃ ∂log q/∂φ is replaced by its reparameterized
    expectation (w̃ - w̃²) ∂log w/∂z ∂z/∂φ, so the estimate is unbiased for the same bound
    and its signal-to-noise ratio for φ rises with K where plain IWAE's falls (Rainforth et
    al. 2018). Computed as -Σ w̃ ℓ_k with ℓ_k = log w_k + log q_φ(z̄_k) - log q_φ(z̄_k).detach()
    (the path through z only, z̄ the codes held fixed), each code's gradient scaled by its
    w̃ once more on the way back to the guide; a parameter that the model shares with the
    guide (a VampPrior's encoder) gets IWAE's w̃-weighted gradient for its direct use in
    the model. The loss's value is the IWAE bound's. Needs a reparameterized guide whose
    density can score any code (not planar or radial flows).
    """

    def differentiable_loss(
        self, model: Callable, guide: Callable, x: torch.Tensor
    ) -> torch.Tensor:
        k = self.num_particles
        holder: dict[str, torch.Tensor] = {}
        scale = _HookLatents(lambda value: _ScaleGradient.apply(value, holder))
        model_trace, guide_trace = particle_traces(model, guide, x, k, around_guide=scale)
        log_q = _scored(lambda: site_log_probs(guide_trace, "guide"))  # hooked: no cache
        log_w = site_log_probs(model_trace, "model") - log_q
        score = _fixed_code_log_q(guide, guide_trace, x, k)
        weights = _HeldWeights.apply(torch.softmax(log_w.detach(), 0), holder)
        surrogate = -(weights * (log_w + score - score.detach())).sum()
        bound = -(torch.logsumexp(log_w.detach(), 0) - math.log(k)).sum()
        return bound + (surrogate - surrogate.detach())


class LatentScale(ScaleMessenger):
    """``poutine.scale`` for continuous latent (unobserved) sample sites only.

    Applied to both model and guide, Trace_ELBO becomes E[log p(x|z)] + β E[log p(z) − log q(z|x)]:
    the KL term weighted by β. A β rising from near 0 to 1 over the first epochs is KL warm-up
    (Bowman et al. 2016; Sønderby et al. 2016). ``beta`` may be changed between steps.

    A discrete latent site (one whose distribution enumerates its support: m2's label y)
    keeps its weight: under m2's TraceEnum_ELBO the objective becomes
    Σ_y q(y|x) [log p(x|y,z) + β (log p(z) − log q(z|x,y))] + log p(y) + H(q(y|x)), β on the
    code's KL alone. The label's terms are the classifier's entropy, which the semi-supervised
    objective needs at full weight whatever the code's KL costs.
    """

    def __init__(self, beta: float):
        super().__init__(scale=beta)

    @property
    def beta(self) -> float:
        return self.scale

    @beta.setter
    def beta(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"beta must be > 0, got {value}")
        self.scale = value

    def _process_message(self, msg) -> None:
        if (
            msg["type"] == "sample"
            and not msg["is_observed"]
            and not site_is_subsample(msg)
            and not msg["fn"].has_enumerate_support
        ):
            msg["scale"] = self.scale * msg["scale"]


def warmup_beta(epoch: int, warmup_epochs: int, beta: float = 1.0) -> float:
    """β for ``epoch`` (1-based): ``beta`` · epoch / warmup_epochs up to ``beta``; always
    ``beta`` without warm-up (a β-VAE, Higgins et al. 2017, for ``beta`` ≠ 1)."""
    return beta if warmup_epochs <= 0 else beta * min(1.0, epoch / warmup_epochs)


def analytic_kl_pairs(model: Callable, guide: Callable, *args: torch.Tensor) -> dict[str, bool]:
    """For each latent site, whether ``kl_divergence(q, p)`` has a closed form (``args``:
    the programs' arguments, the images and any labels)."""
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    pairs = {}
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        try:
            kl_divergence(site["fn"], model_trace.nodes[name]["fn"])
            pairs[name] = True
        except NotImplementedError:
            pairs[name] = False
    return pairs
