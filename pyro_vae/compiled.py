"""The training loss as a module: Pyro's ELBO run eagerly, or Pyro's JIT-traced form of it.

Eagerly, Pyro's ELBO rebuilds the guide trace and the replayed model trace in Python on
every step: messages through the handler stack, one ``pyro.param`` per network parameter,
site bookkeeping, and in ``Trace_ELBO.differentiable_loss`` one ``.item()`` (a host-device
synchronization) per sample site. For the MLP VAE that is about as much time as the
networks themselves take on a small batch. Pyro's ``JitTrace_ELBO`` and
``JitTraceMeanField_ELBO`` record the tensor operations of one eager run with
``torch.jit.trace`` and replay them without the Python, so the estimator is the eager
ELBO's, term for term (the project's IWAE bound, whose loss has no ``.item()``, is traced as
it is with ``pyro.ops.jit.trace``); :func:`training_loss` checks that on a real batch
before it trusts the trace, and falls back to the eager module, saying why, where it does
not hold.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial

import pyro.infer
import torch
from torch import nn

from pyro_vae.config import COMPILE_MODES
from pyro_vae.evaluation import fixed_seed, preserved_rng
from pyro_vae.objectives import IWAE_ELBO, STL_ELBO, DReG_IWAE_ELBO
from pyro_vae.semisupervised import SemiSupervisedELBO
from pyro_vae.svi import arguments

# Each eager ELBO of the registry and Pyro's traced form of the same estimator; None: the
# ELBO's own differentiable_loss is tensor arithmetic throughout (no .item()), so
# pyro.ops.jit.trace records it as it is.
JIT_FORMS: dict[type, type | None] = {
    pyro.infer.Trace_ELBO: pyro.infer.JitTrace_ELBO,
    pyro.infer.TraceMeanField_ELBO: pyro.infer.JitTraceMeanField_ELBO,
    IWAE_ELBO: None,
    STL_ELBO: None,
    # m2's TraceEnum_ELBO and Trace_ELBO terms (Pyro's JitTraceEnum_ELBO traces the same)
    SemiSupervisedELBO: None,
    # DReG's gradient scaling reads weights computed after the codes are drawn; they pass
    # through an autograd Function, which the trace records and runs on every replay
    DReG_IWAE_ELBO: None,
}


@dataclass
class _Trace:
    """One trace of the loss: a TorchScript function of (parameters..., *batch)."""

    graph: Callable[..., torch.Tensor | tuple[torch.Tensor, torch.Tensor]]
    parameters: list[torch.Tensor]  # the inputs it takes before the batch, in its order
    with_surrogate: bool  # returns (loss, surrogate loss), not the loss alone

    def __call__(self, *batch: torch.Tensor) -> torch.Tensor:
        out = self.graph(*self.parameters, *batch)
        if not self.with_surrogate:
            return out
        # Trace_ELBO's formula: the loss's value, the surrogate's gradient. (Pyro 1.9's
        # JitTrace_ELBO.differentiable_loss adds the two gradients instead, leaving the
        # loss attached: its gradients come out doubled. Its loss_and_grads, which SVI
        # uses, is right.)
        loss, surrogate = out
        return loss.detach() + (surrogate - surrogate.detach())


class JitTracedLoss(nn.Module):
    """Pyro's JIT form of ``elbo`` for one model/guide pair: ``forward(*batch)`` is the loss
    (``batch``: the images, and the labels of a class-conditional model).

    Assumptions (Pyro's, see ``pyro.infer.JitTrace_ELBO``): the model and guide have a static
    structure (the same sites every call, no Python branching on tensor values), and while
    a trace is made, Pyro's param store holds their parameters under their ``pyro.module``
    names (``pyro.clear_param_store()`` before a second model is built in the process).

    Pyro's JIT ELBOs make the trace; the replays call it directly with the parameter
    tensors it was made with, which skips Pyro's per-call parameter lookups and makes the
    replays independent of whatever the param store holds later.

    Python numbers read while tracing are frozen into the trace: the batch size (the data
    plate's size) and anything ``constants()`` returns, such as a KL warm-up β. Traces are
    therefore kept per batch shape and per ``constants()``; ``pyro.ops.jit`` itself keys
    them by the number of arguments only, and would replay a trace made for 256 images on
    the last batch of 96.

    A replay that raises (a trace that held for the shapes it saw but not for a later batch,
    say, a spline flow's boolean masks) is not fatal: the loss warns once, naming the error,
    and is Pyro's eager ``elbo(model, guide)`` from then on.

    The traces run with the TorchScript optimizer off: each call then executes and
    differentiates exactly the recorded operations, so the results do not change once the
    profiling executor has seen a few calls, and a resumed run repeats an uninterrupted
    one bit for bit. (On the CPU it was also the faster setting.)
    """

    def __init__(
        self,
        elbo: pyro.infer.ELBO,
        model: Callable,
        guide: Callable,
        constants: Callable[[], tuple[Hashable, ...]] = tuple,
    ):
        super().__init__()
        self.model = model
        self.guide = guide
        self.elbo = elbo
        self.jit_class = JIT_FORMS[type(elbo)]
        self.constants = constants
        self.traced: dict[tuple, _Trace] = {}
        self.eager: Callable[..., torch.Tensor] | None = None  # after a failure

    def forward(self, *batch: torch.Tensor) -> torch.Tensor:
        if self.eager is not None:
            return self.eager(*batch)
        shapes, device = tuple(tuple(t.shape) for t in batch), batch[0].device
        key = (shapes, tuple(t.dtype for t in batch), str(device), *self.constants())
        with torch.jit.optimized_execution(False):
            trace = self.traced.get(key)
            if trace is None:
                trace = self.traced[key] = self._trace(*batch)
                return trace(*batch)
            # The draws a failed replay made are put back, so the eager loss that takes
            # over draws what it would have: the run stays the eager run, bit for bit.
            rng = _rng_state(device)
            try:
                return trace(*batch)
            except RuntimeError as error:
                _set_rng_state(device, rng)
                shown = ", ".join(str(shape) for shape in shapes)
                warnings.warn(
                    f"--compile jit: a traced loss failed on a batch of shape {shown} "
                    f"({_summary(error)}); training with Pyro's eager "
                    f"{type(self.elbo).__name__} from here on",
                    stacklevel=2,
                )
                self.eager = self.elbo(self.model, self.guide)
                return self.eager(*batch)

    def _trace(self, *batch: torch.Tensor) -> _Trace:
        with_surrogate = self.jit_class is pyro.infer.JitTrace_ELBO
        if self.jit_class is None:
            elbo, model, guide = self.elbo, self.model, self.guide
            compiled = pyro.ops.jit.trace(
                lambda *args: elbo.differentiable_loss(model, guide, *args), ignore_warnings=True
            )
            run = compiled
        else:
            jit_elbo = self.jit_class(
                num_particles=self.elbo.num_particles,
                max_plate_nesting=self.elbo.max_plate_nesting,
                vectorize_particles=self.elbo.vectorize_particles,
                ignore_jit_warnings=True,
            )
            if with_surrogate:
                run = partial(jit_elbo.loss_and_surrogate_loss, self.model, self.guide)
            else:
                run = partial(jit_elbo.differentiable_loss, self.model, self.guide)
        # Tracing runs the program twice; its random draws are put back, so that a step
        # draws the same numbers whether or not it made a trace (a resumed run makes its
        # traces at other steps than the run it continues).
        with warnings.catch_warnings(), preserved_rng(batch[0].device):
            # Pyro's JIT ELBOs are built on torch.jit.trace, which torch 2.9+ marks
            # deprecated; the fallback to the eager loss covers a torch that drops it.
            warnings.filterwarnings("ignore", r".*torch\.jit\.trace.* is deprecated")
            run(*batch)
        if self.jit_class is not None:
            compiled = getattr(
                jit_elbo, "_loss_and_surrogate_loss" if with_surrogate else "_differentiable_loss"
            )
        (graph,) = compiled.compiled.values()
        store = pyro.get_param_store()
        parameters = [store[name].unconstrained() for name in compiled._param_names]
        return _Trace(graph, parameters, with_surrogate)


def _summary(error: Exception) -> str:
    """The error's type and its last line (TorchScript puts the actual error last)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {(lines or [''])[-1][:200]}"


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.random.get_rng_state(), cuda


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.random.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _loss_and_gradients(
    loss_fn: Callable[..., torch.Tensor],
    params: list[torch.Tensor],
    batch: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
    with fixed_seed(1, batch[0].device):  # the same draws for both forms; RNG untouched
        loss = loss_fn(*batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), grads


def _mismatch(eager: tuple, traced: tuple, names: list[str]) -> str | None:
    """Where the traced loss or gradient differs from the eager one beyond fp32 rounding."""
    (eager_loss, eager_grads), (traced_loss, traced_grads) = eager, traced
    if not torch.allclose(traced_loss, eager_loss, rtol=1e-4, atol=1e-3):
        return f"loss {traced_loss.item():.6g} traced vs {eager_loss.item():.6g} eager"
    for name, a, b in zip(names, eager_grads, traced_grads):
        if (a is None) != (b is None) or (
            a is not None and not torch.allclose(b, a, rtol=1e-3, atol=1e-4)
        ):
            return f"the gradient of {name}"
    return None


def torchscript_available() -> bool:
    """Whether this torch still has TorchScript's tracer, which PyTorch has deprecated and
    Pyro's JIT ELBOs rest on; without it every run trains eagerly, with one warning."""
    jit = getattr(torch, "jit", None)
    return all(hasattr(jit, name) for name in ("trace", "optimized_execution"))


def training_loss(
    elbo: pyro.infer.ELBO,
    model: Callable,
    guide: Callable,
    batch: torch.Tensor | tuple[torch.Tensor, ...],
    parameters: list[tuple[str, torch.Tensor]],
    mode: str = "jit",
    constants: Callable[[], tuple[Hashable, ...]] = tuple,
) -> tuple[nn.Module, str]:
    """The loss module to train with, and the mode it runs in: ``"jit"`` or ``"eager"``.

    ``mode="jit"`` traces the loss on ``batch`` (a training-sized batch: images, or the
    tuple of the loss's arguments) and keeps the trace
    only if its loss and the gradient of every one of the named ``parameters`` match the
    eager ELBO's for the same random draws. (``model`` and ``guide`` may be wrapped in
    handlers, a KL warm-up's scale say, so the parameters are passed rather than found.)
    It falls back to Pyro's eager ``elbo(model, guide)``, with one warning saying which
    condition failed, when the ELBO has no JIT form (one added to the registry, say), when
    tracing raises, or when the two disagree (Python control flow on tensor values, say).
    """
    eager = elbo(model, guide)
    batch = arguments(batch)
    if mode == "eager":
        return eager, "eager"
    if mode != "jit":
        raise ValueError(f"unknown compile mode {mode!r}; valid modes: {', '.join(COMPILE_MODES)}")
    if not torchscript_available():
        reason = f"torch {torch.__version__} has no TorchScript (torch.jit.trace)"
    elif type(elbo) not in JIT_FORMS:
        reason = f"no JIT form of {type(elbo).__name__} is known (pyro_vae.compiled.JIT_FORMS)"
    else:
        traced = JitTracedLoss(elbo, model, guide, constants)
        named = [(n, p) for n, p in parameters if p.requires_grad]
        params = [p for _, p in named]
        try:
            # The trace is made on other random draws than those it is checked on, so a trace
            # that holds only for the values it saw (boolean masks, branches) shows up here.
            with fixed_seed(0, batch[0].device):
                traced(*batch)
            mismatch = _mismatch(
                _loss_and_gradients(eager, params, batch),
                _loss_and_gradients(traced, params, batch),
                [n for n, _ in named],
            )
        except Exception as error:  # noqa: BLE001 - any tracing failure means: run eagerly
            reason = f"tracing failed ({_summary(error)})"
        else:
            if mismatch is None:
                return traced, "jit"
            reason = f"the traced loss differs from the eager one ({mismatch})"
    warnings.warn(
        f"--compile jit: {reason}; training with Pyro's eager {type(elbo).__name__} instead",
        stacklevel=2,
    )
    return eager, "eager"
