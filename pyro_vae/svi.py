"""Stochastic variational inference for a VAE's Pyro model/guide pair.

Each step minimizes Pyro's ELBO loss (``Trace_ELBO``, ``TraceMeanField_ELBO`` or the IWAE
bound) for one minibatch: Pyro's JIT-traced form of it, checked against the eager loss
module ``elbo(model, guide)`` first (``pyro_vae.compiled``), or that module itself; one
fused Adam updates every parameter of model and guide at once, rather than the one
optimizer per parameter of ``pyro.optim``. The loss of a batch is a sum over its images;
reported ELBOs are divided by the number of images (nats per image).

This module holds the steps; the loop that takes them, with its checkpoints, evaluation
and data parallelism, is ``pyro_vae.trainer``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from pyro import poutine
from torch import nn

from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import fixed_seed
from pyro_vae.objectives import analytic_kl_pairs
from pyro_vae.optimizers import OPTIMIZERS
from pyro_vae.torch_private import add_nonfinite_flag

DEFER_CHECK_DEVICES = ("cuda",)  # where the per-step finiteness check is read in windows


class NonFiniteLossError(UserInputError):
    """Training produced a NaN or infinite loss or gradient; the last good checkpoint is kept."""


def adam(
    parameters: list[torch.Tensor],
    lr: float,
    eps: float = 1e-8,
    variant: str = "adam",
    beta1: float = 0.9,
) -> torch.optim.Adam:
    """One Adam over all parameters of model and guide: torch's fused kernel (the whole
    update of a tensor in one pass), or the foreach form where the device has none. ``eps``
    is added to √v̂ in the step's denominator, ``beta1`` is the first moment's decay (β2
    stays 0.999); ``variant`` names an entry of :data:`OPTIMIZERS` (Adam, or Adam on
    normalized gradients)."""
    kind = OPTIMIZERS[variant]
    options = dict(lr=lr, eps=eps, betas=(beta1, 0.999))
    try:
        return kind(parameters, **options, fused=True)
    except RuntimeError:
        return kind(parameters, **options, foreach=True)


def nonfinite_flag(loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """A 0-dim tensor on the loss's device: 0 if the loss and every gradient element are
    finite, else positive. Computed without waiting for the device.

    The gradients are scanned by the kernel AMP's gradient scaler uses (one fused pass,
    :func:`pyro_vae.torch_private.add_nonfinite_flag`), three times faster on the CPU than
    the norm of every gradient.
    """
    found = (~torch.isfinite(loss)).float().reshape(())
    groups: dict[tuple, list[torch.Tensor]] = {}  # the kernel takes one device and dtype
    for grad in grads:
        groups.setdefault((grad.device, grad.dtype), []).append(grad)
    for (device, _), group in groups.items():
        here = found if device == found.device else torch.zeros((), device=device)
        add_nonfinite_flag(group, here)
        if here is not found:
            found += here.to(found.device)
    return found


def all_finite(loss: torch.Tensor, grads: list[torch.Tensor]) -> bool:
    """Whether the loss and every gradient element are finite (one wait for the device)."""
    return not nonfinite_flag(loss, grads).item()


def arguments(batch: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A step's batch as the tuple of the loss's arguments: images alone, or (as the
    class-conditional models train) images with labels."""
    return batch if isinstance(batch, tuple) else (batch,)


def _loss_and_backward(
    loss_fn: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor | tuple[torch.Tensor, ...],
    global_loss: Callable[[torch.Tensor], torch.Tensor] | None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A step's loss (the global one where ``global_loss`` is given) with its gradients
    in the optimizer's parameters, and those parameters."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss = loss_fn(*arguments(x))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if global_loss is not None:
        loss = global_loss(loss)
    return loss, params


def svi_step(
    loss_fn: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor | tuple[torch.Tensor, ...],
    clip_norm: float | None = None,
    check_finite: bool = True,
    global_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, bool]:
    """One SVI step on batch ``x`` (a tensor, or the tuple of the loss's arguments);
    returns (loss, whether the step was taken).

    With ``check_finite`` a non-finite loss or gradient skips the parameter update and
    returns False (this waits for the device once per step); the caller decides what follows.
    ``global_loss`` turns the loss of this process's batch into the one reported and
    checked: under data parallelism, the global batch's (``ProcessGroup.global_loss``),
    which is finite on every rank or on none.
    """
    loss, params = _loss_and_backward(loss_fn, optimizer, x, global_loss)
    grads = [p.grad for p in params if p.grad is not None]
    if clip_norm is not None:
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if check_finite and not bool(torch.isfinite(loss) & torch.isfinite(norm)):
            return loss, False
        torch.nn.utils.clip_grads_with_norm_(params, clip_norm, norm, foreach=True)
    elif check_finite and not all_finite(loss, grads):
        return loss, False
    optimizer.step()
    return loss, True


def defers_check(
    device: torch.device, optimizer: torch.optim.Optimizer, clip_norm: float | None
) -> bool:
    """Whether steps on ``device`` check finiteness without waiting for it: on a device of
    DEFER_CHECK_DEVICES, without clipping (which needs the norm at once), and with an
    optimizer that can skip a step on the device. Torch's fused Adam can: it reads a
    ``found_inf`` flag, as under AMP's gradient scaler, and where it is set leaves
    parameters, moments and step count as they were."""
    fused = bool(optimizer.defaults.get("fused"))
    return device.type in DEFER_CHECK_DEVICES and clip_norm is None and fused


def svi_step_deferred(
    loss_fn: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor | tuple[torch.Tensor, ...],
    global_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SVI step that never waits for the device; returns (loss, non-finite flag).

    A non-finite loss or gradient sets the flag, and the fused optimizer then skips the
    update on the device (see :func:`defers_check`); the caller reads the flags later,
    a window of steps at a time, and acts on them as :func:`svi_step`'s caller would.
    ``global_loss`` as in :func:`svi_step`.
    """
    loss, params = _loss_and_backward(loss_fn, optimizer, x, global_loss)
    found = nonfinite_flag(loss, [p.grad for p in params if p.grad is not None])
    optimizer.found_inf = found
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf
    return loss, found


def warn_sampled_kl(model: nn.Module, guide: nn.Module, *args: torch.Tensor) -> None:
    """Say once which latent sites TraceMeanField_ELBO cannot give a closed-form KL."""
    pairs = analytic_kl_pairs(model, guide, *args)
    sampled = [name for name, closed in pairs.items() if not closed]
    if sampled:
        warnings.warn(
            f"--elbo meanfield: no closed-form KL between the {type(guide).__name__} guide and "
            f"the prior at site(s) {', '.join(map(repr, sampled))}; TraceMeanField_ELBO uses "
            "the sampled log q - log p there",
            stacklevel=2,
        )


def nonfinite_report(model: torch.nn.Module, guide: torch.nn.Module, *args: torch.Tensor) -> str:
    """Which sites' log-probabilities, parameters and gradients are not finite, re-run on
    ``args`` (the images, and the labels of a model that takes them)."""
    sites, params, grads = [], [], []
    with torch.no_grad(), fixed_seed(0, args[0].device):  # the diagnosis must not move the RNG
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
        for program, trace in (("model", model_trace), ("guide", guide_trace)):
            for name, site in trace.nodes.items():
                if site["type"] == "sample" and not poutine.util.site_is_subsample(site):
                    if not torch.isfinite(site["fn"].log_prob(site["value"])).all():
                        sites.append(f"{program} site {name!r}")
    for program, module in (("model", model), ("guide", guide)):
        for name, param in module.named_parameters():
            if not torch.isfinite(param).all():
                params.append(f"{program}.{name}")
            elif param.grad is not None and not torch.isfinite(param.grad).all():
                grads.append(f"{program}.{name}")

    def listing(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    found = [f"log-probability of {listing(sites)}"] if sites else []
    found += [f"parameters {listing(params)}"] if params else []
    found += [f"gradients of {listing(grads)}"] if grads else []
    return "; ".join(found) + " not finite" if found else "the loss (no single site reproduces it)"
