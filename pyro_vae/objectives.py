"""Training objectives beyond Pyro's stock ELBOs, and KL warm-up.

- :class:`IWAE_ELBO`: the importance-weighted bound, per data point.
- :class:`LatentScale`: ``poutine.scale`` restricted to latent sites; on model and guide it
  weights the ELBO's KL term by β (KL warm-up).
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

from pyro_vae.importance import log_importance_weights


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


class LatentScale(ScaleMessenger):
    """``poutine.scale`` for latent (unobserved) sample sites only.

    Applied to both model and guide, Trace_ELBO becomes E[log p(x|z)] + β E[log p(z) − log q(z|x)]:
    the KL term weighted by β. A β rising from near 0 to 1 over the first epochs is KL warm-up
    (Bowman et al. 2016; Sønderby et al. 2016). ``beta`` may be changed between steps.
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
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            msg["scale"] = self.scale * msg["scale"]


def warmup_beta(epoch: int, warmup_epochs: int) -> float:
    """β for ``epoch`` (1-based): epoch / warmup_epochs up to 1; always 1 without warm-up."""
    return 1.0 if warmup_epochs <= 0 else min(1.0, epoch / warmup_epochs)


def analytic_kl_pairs(model: Callable, guide: Callable, x: torch.Tensor) -> dict[str, bool]:
    """For each latent site, whether ``kl_divergence(q, p)`` has a closed form."""
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
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
