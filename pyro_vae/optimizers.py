"""The optimizers ``config.optimizer`` names: one table, read by ``pyro_vae.svi.adam`` and by
the config's validation and help."""

from __future__ import annotations

from collections.abc import Callable

import torch


class AdamNormGrad(torch.optim.Adam):
    """Adam on normalized gradients: each parameter tensor's gradient g is replaced by
    g / (‖g‖₂ + 1e-7) before the Adam update, so a tensor's update no longer depends on how
    large its gradient is at this step relative to earlier ones (Adam alone is invariant
    only to a scale that stays fixed).

    The optimizer of the VampPrior authors' code (Tomczak & Welling 2018,
    github.com/jmtomczak/vae_vampprior, utils/optimizer.py), with torch's Adam after the
    division. Its state is Adam's, so a checkpoint of one loads into the other.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(torch.linalg.vector_norm(p.grad) + 1e-7)
        return super().step(closure)


OPTIMIZERS = {"adam": torch.optim.Adam, "adam-normgrad": AdamNormGrad}
