"""Stochastic variational inference for a VAE's Pyro model/guide pair.

Each step minimizes Pyro's ELBO loss (``Trace_ELBO``, ``TraceMeanField_ELBO`` or the IWAE
bound) for one minibatch: Pyro's JIT-traced form of it, checked against the eager loss
module ``elbo(model, guide)`` first (``pyro_vae.compiled``), or that module itself; one
fused Adam updates every parameter of model and guide at once, rather than the one
optimizer per parameter of ``pyro.optim``. The loss of a batch is a sum over its images;
reported ELBOs are divided by the number of images (nats per image).

Training survives interruption: a checkpoint (parameters, optimizer state, every RNG state,
the epoch's minibatch order and the position in it) is written atomically every
``checkpoint_every`` epochs, every ``checkpoint_minutes`` minutes (mid-epoch too), at the end,
and on SIGINT/SIGTERM; ``train(..., resume=True)`` continues from it, bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyro
import torch
from pyro import poutine
from torch import nn
from tqdm.auto import tqdm

from pyro_vae.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    write_text_atomically,
)
from pyro_vae.compiled import training_loss
from pyro_vae.config import RESUMABLE_CHANGES, TrainConfig, differing_fields
from pyro_vae.data import ImageData
from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import elbo_per_datapoint, fixed_seed
from pyro_vae.objectives import LatentScale, analytic_kl_pairs, warmup_beta
from pyro_vae.registry import make_elbo
from pyro_vae.run import CONFIG_NAME, METRICS_NAME, Run, prepare, read_config, write_images

PROGRESS_EVERY = 25  # steps between progress-bar loss updates
DEFER_CHECK_DEVICES = ("cuda",)  # where the per-step finiteness check is read in windows


class NonFiniteLossError(UserInputError):
    """Training produced a NaN or infinite loss or gradient; the last good checkpoint is kept."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint of the exact position was written first."""


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.dataset}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir``; refuse one that already holds a run, or one that cannot be written."""
    if (run_dir / CHECKPOINT_NAME).exists() or (run_dir / CONFIG_NAME).exists():
        raise UserInputError(
            f"{run_dir} already holds a run; choose another --out, or continue it with --resume"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserInputError(f"cannot write to run folder {run_dir} ({error.strerror})") from None
    return run_dir


def adam(parameters: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """One Adam over all parameters of model and guide: torch's fused kernel (the whole
    update of a tensor in one pass), or the foreach form where the device has none."""
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.Adam(parameters, lr=lr, foreach=True)


def nonfinite_flag(loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """A 0-dim tensor on the loss's device: 0 if the loss and every gradient element are
    finite, else positive. Computed without waiting for the device.

    The gradients are scanned by the kernel AMP's gradient scaler uses (one fused pass,
    multiplying by 1, which leaves them as they are), three times faster on the CPU than
    the norm of every gradient.
    """
    found = (~torch.isfinite(loss)).float().reshape(())
    groups: dict[tuple, list[torch.Tensor]] = {}  # the kernel takes one device and dtype
    for grad in grads:
        groups.setdefault((grad.device, grad.dtype), []).append(grad)
    for (device, _), group in groups.items():
        here = found if device == found.device else torch.zeros((), device=device)
        torch._amp_foreach_non_finite_check_and_unscale_(group, here, _one(device))
        if here is not found:
            found += here.to(found.device)
    return found


def all_finite(loss: torch.Tensor, grads: list[torch.Tensor]) -> bool:
    """Whether the loss and every gradient element are finite (one wait for the device)."""
    return not nonfinite_flag(loss, grads).item()


@functools.cache
def _one(device: torch.device) -> torch.Tensor:
    return torch.ones((), device=device)


def svi_step(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    clip_norm: float | None = None,
    check_finite: bool = True,
) -> tuple[torch.Tensor, bool]:
    """One SVI step on batch ``x``; returns (loss, whether the step was taken).

    With ``check_finite`` a non-finite loss or gradient skips the parameter update and
    returns False (this waits for the device once per step); the caller decides what follows.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss = loss_fn(x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
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
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SVI step that never waits for the device; returns (loss, non-finite flag).

    A non-finite loss or gradient sets the flag, and the fused optimizer then skips the
    update on the device (see :func:`defers_check`); the caller reads the flags later,
    a window of steps at a time, and acts on them as :func:`svi_step`'s caller would.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss = loss_fn(x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    found = nonfinite_flag(loss, [p.grad for p in params if p.grad is not None])
    optimizer.found_inf = found
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf
    return loss, found


def svi_epoch(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    data: ImageData,
    generator: torch.Generator,
    batch_size: int,
    clip_norm: float | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """One pass over the training images in a random order, one SVI step per minibatch.

    The steps :func:`train` takes, without its checkpoints and progress bar (on a GPU the
    finiteness flags are read once, at the end). Returns the summed loss as a device
    tensor; a non-finite step raises NonFiniteLossError.
    """
    defer = check_finite and defers_check(data.device, optimizer, clip_norm)
    total = torch.zeros((), device=data.device)
    flags = []
    order = torch.randperm(data.train.shape[0], generator=generator, device=data.device)
    for step, index in enumerate(order.split(batch_size)):
        x = data.train_batch(index, generator)
        if defer:
            loss, found = svi_step_deferred(loss_fn, optimizer, x)
            flags.append(found)
            total += torch.where(found > 0, 0.0, loss.detach())
            continue
        loss, taken = svi_step(loss_fn, optimizer, x, clip_norm, check_finite)
        if not taken:
            raise NonFiniteLossError(f"non-finite loss or gradient at step {step + 1}")
        total += loss.detach()
    bad = torch.stack(flags).nonzero() if flags else []
    if len(bad):
        raise NonFiniteLossError(f"non-finite loss or gradient at step {bad[0].item() + 1}")
    return total


def warn_sampled_kl(model: nn.Module, guide: nn.Module, x: torch.Tensor) -> None:
    """Say once which latent sites TraceMeanField_ELBO cannot give a closed-form KL."""
    sampled = [name for name, closed in analytic_kl_pairs(model, guide, x).items() if not closed]
    if sampled:
        warnings.warn(
            f"--elbo meanfield: no closed-form KL between the {type(guide).__name__} guide and "
            f"the prior at site(s) {', '.join(map(repr, sampled))}; TraceMeanField_ELBO uses "
            "the sampled log q - log p there",
            stacklevel=2,
        )


def nonfinite_report(model: torch.nn.Module, guide: torch.nn.Module, x: torch.Tensor) -> str:
    """Which sites' log-probabilities, parameters and gradients are not finite, re-run on ``x``."""
    sites, params, grads = [], [], []
    with torch.no_grad(), fixed_seed(0, x.device):  # the diagnosis must not move the RNG
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
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


@contextlib.contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM, so the loop can checkpoint before it stops.

    A second SIGINT raises KeyboardInterrupt at once. Outside the main thread (where Python
    allows no signal handlers) the event simply never fires.
    """
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handle(signum, frame):
        if event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        event.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class Position:
    """Where training stands: ``epochs_done`` full epochs, then ``step`` steps of the next."""

    epochs_done: int = 0
    step: int = 0
    order: torch.Tensor | None = None  # the next epoch's minibatch order, once it has begun
    total: torch.Tensor | None = None  # that epoch's summed loss so far
    seconds: float = 0.0  # that epoch's training time so far
    skipped: int = 0  # non-finite steps skipped over the whole run


def resume_config(run_dir: Path, asked: TrainConfig | None) -> TrainConfig:
    """The stored config of ``run_dir``, with the changes ``asked`` may make on resume."""
    if not run_dir.is_dir():
        raise UserInputError(f"cannot resume: run folder {run_dir} does not exist")
    stored = read_config(run_dir)
    if asked is None:
        return stored
    fixed = differing_fields(stored, asked, ignore=RESUMABLE_CHANGES)
    if fixed:
        raise UserInputError(
            f"cannot resume {run_dir} with a different model or training config "
            f"({'; '.join(fixed)}); only {', '.join(RESUMABLE_CHANGES)} may change"
        )
    return asked


def train(
    config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
) -> Run:
    """Train the VAE that ``config`` describes and write its run folder (see ``pyro_vae.run``).

    ``run_dir=None`` writes to ``runs/<dataset>-<timestamp>``. With ``resume=True`` the run in
    ``run_dir`` continues from its checkpoint (``config`` may be None, or change only the
    fields in ``RESUMABLE_CHANGES``, such as ``epochs``). Returns the trained :class:`Run`.
    """
    if resume:
        if run_dir is None:
            raise UserInputError("resume needs the run folder to continue")
        run_dir = Path(run_dir)
        config = resume_config(run_dir, config)
        # A run stopped before its first checkpoint starts afresh from its config.json.
        checkpoint = run_dir / CHECKPOINT_NAME
        state = load_checkpoint(checkpoint) if checkpoint.exists() else None
        stored = TrainConfig.from_dict(state["config"]) if state else config
        differ = differing_fields(stored, read_config(run_dir), ignore=RESUMABLE_CHANGES)
        if differ:
            raise UserInputError(
                f"the checkpoint and config.json in {run_dir} disagree ({'; '.join(differ)})"
            )
    elif config is None:
        raise UserInputError("train needs a TrainConfig (or resume=True and a run folder)")

    pyro.clear_param_store()  # stale parameters of an earlier model must not shadow these
    pyro.set_rng_seed(config.seed)  # before the networks are built: their initialization too
    data, model, guide = prepare(config)
    n_train = data.train.shape[0]
    if config.batch_size > n_train:
        raise UserInputError(
            f"batch_size {config.batch_size} is larger than the {n_train} training images of "
            f"{config.dataset}; use --batch-size {n_train} or less"
        )
    if not resume:
        run_dir = prepare_run_dir(Path(run_dir) if run_dir else default_run_dir(config))
    write_text_atomically(run_dir / CONFIG_NAME, json.dumps(config.to_dict(), indent=2) + "\n")
    metrics_path = run_dir / METRICS_NAME

    device = data.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    objective = make_elbo(config)
    # KL warm-up scales the latent sites of model and guide by β (set at each epoch's start).
    warmup = LatentScale(1.0)
    if config.kl_warmup_epochs:
        program = (warmup(model), warmup(guide))
        constants = lambda: (warmup.beta,)  # noqa: E731 - β is frozen into a JIT trace
    else:
        program, constants = (model, guide), tuple
    probe = next(data.eval_batches("valid", 8))
    # Check the pair once with Pyro's validation on (site shapes, model/guide match), then run
    # the hot loop without it; support was checked once on the whole data set.
    with pyro.validation_enabled(True), torch.no_grad(), fixed_seed(0, device):  # no RNG moves
        objective(*program)(probe)
        if config.elbo == "meanfield":
            warn_sampled_kl(model, guide, probe)
    named = list(nn.ModuleDict({"model": model, "guide": guide}).named_parameters())
    # A training-sized batch, binarized by a generator of its own: the run's RNG stays put.
    first = torch.arange(min(config.batch_size, n_train), device=device)
    check_batch = data.train_batch(first, torch.Generator(device=device).manual_seed(0))
    with pyro.validation_enabled(False):
        loss_fn, compile_mode = training_loss(
            objective, *program, check_batch, named, config.compile, constants
        )
    optimizer = adam([p for _, p in named], config.lr)  # shared parameters once
    history: list[dict] = []
    position = Position()
    if resume and state is not None:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], generator)
        history = list(state["history"])
        position = Position(**state["position"])
        position.order = position.order.to(device) if position.order is not None else None
        position.total = position.total.to(device) if position.total is not None else None

    def write_checkpoint() -> None:
        state = {
            "config": config.to_dict(),
            "epoch": position.epochs_done,
            "position": vars(position),
            "history": history,
            "model": model.state_dict(),
            "guide": guide.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": capture_rng(generator),
        }
        save_checkpoint(run_dir / CHECKPOINT_NAME, state)

    def write_metrics() -> None:
        # Rewritten whole from the history, so a resumed run's file matches its checkpoint.
        write_text_atomically(metrics_path, "".join(json.dumps(row) + "\n" for row in history))

    def evaluate_row(epoch: int, train_elbo: float | None, seconds: float | None) -> dict:
        # train_elbo is minus the training objective (β-weighted during warm-up; the IWAE
        # bound under --elbo iwae); the validation and test columns are always Trace_ELBO.
        row = {"epoch": epoch, "train_elbo": train_elbo, "seconds": seconds}
        # The loss that ran: "eager" too once a failed JIT replay has handed over.
        fell_back = compile_mode == "jit" and loss_fn.eager is not None
        row["compile"] = "eager" if fell_back else compile_mode
        row["kl_weight"] = warmup_beta(epoch, config.kl_warmup_epochs) if epoch else None
        for split in ("valid", "test"):
            row[f"{split}_elbo"] = elbo_per_datapoint(
                model, guide, data, split, config.eval_batch_size
            )
        return row

    if not history:  # epoch 0, the untrained model, is evaluated and checkpointed like any
        history.append(evaluate_row(0, None, None))
        write_checkpoint()
    write_metrics()

    def skip_or_stop(epoch: int, step: int, x: torch.Tensor) -> None:
        position.skipped += 1
        where = f"epoch {epoch}, step {step + 1}: {nonfinite_report(model, guide, x)}"
        if position.skipped > config.skip_nonfinite:
            raise NonFiniteLossError(
                f"non-finite loss or gradient at {where}; the last good checkpoint "
                f"in {run_dir} is left as it was; try a lower --lr, --clip-norm, or "
                f"--skip-nonfinite N"
            )
        warnings.warn(f"skipped a non-finite step at {where}", stacklevel=1)

    # On a GPU the finiteness of each step is not waited for: the fused optimizer skips a
    # bad update on the device, and the flags are read PROGRESS_EVERY steps at a time, and
    # before every checkpoint, so the host can queue the next steps meanwhile. A bad step
    # is then reported up to PROGRESS_EVERY steps late, its update already skipped.
    defer = defers_check(device, optimizer, config.clip_norm)
    pending: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []  # epoch, step, flag, x

    def settle() -> None:
        if not pending:
            return
        flags = torch.stack([found for _, _, found, _ in pending]).tolist()
        waiting = pending.copy()
        pending.clear()
        for (epoch, step, _, x), bad in zip(waiting, flags):
            if bad:
                skip_or_stop(epoch, step, x)

    steps_per_epoch = math.ceil(n_train / config.batch_size)
    done_steps = min(position.epochs_done, config.epochs) * steps_per_epoch + position.step
    bar = tqdm(
        total=max(config.epochs * steps_per_epoch, done_steps),
        initial=done_steps,
        disable=not progress,
        unit="step",
        mininterval=0.5,
        dynamic_ncols=True,
    )
    last_checkpoint = time.monotonic()
    with bar, pyro.validation_enabled(False), stop_requests() as stop:
        for epoch in range(position.epochs_done + 1, config.epochs + 1):
            warmup.beta = warmup_beta(epoch, config.kl_warmup_epochs)
            if position.order is None:
                position.order = torch.randperm(n_train, generator=generator, device=device)
                position.total = torch.zeros((), device=device)
            batches = position.order.split(config.batch_size)
            start = time.perf_counter() - position.seconds
            for step in range(position.step, len(batches)):
                x = data.train_batch(batches[step], generator)
                if defer:
                    loss, found = svi_step_deferred(loss_fn, optimizer, x)
                    position.total += torch.where(found > 0, 0.0, loss.detach())
                    pending.append((epoch, step, found, x))
                    if len(pending) == PROGRESS_EVERY:
                        settle()
                else:
                    loss, taken = svi_step(loss_fn, optimizer, x, config.clip_norm)
                    if taken:
                        position.total += loss.detach()
                    else:
                        skip_or_stop(epoch, step, x)
                position.step = step + 1
                bar.update()
                if step % PROGRESS_EVERY == 0:
                    bar.set_postfix(epoch=epoch, loss=f"{loss.item() / x.shape[0]:.2f}")
                minutes = config.checkpoint_minutes
                due = minutes is not None and time.monotonic() - last_checkpoint >= 60 * minutes
                if (stop.is_set() or due) and position.step < len(batches):
                    settle()
                    position.seconds = time.perf_counter() - start
                    write_checkpoint()
                    last_checkpoint = time.monotonic()
                    if stop.is_set():
                        raise TrainingInterrupted(
                            f"interrupted in epoch {epoch} after step {position.step}; saved the "
                            f"exact position; continue with: pyro-vae train --resume {run_dir}"
                        )
            settle()
            train_elbo = -position.total.item() / n_train
            seconds = time.perf_counter() - start
            position = Position(epochs_done=epoch, skipped=position.skipped)
            history.append(evaluate_row(epoch, train_elbo, seconds))
            write_metrics()
            if epoch % config.checkpoint_every == 0 or epoch == config.epochs or stop.is_set():
                write_checkpoint()
                last_checkpoint = time.monotonic()
            bar.set_postfix(
                epoch=epoch, train=f"{train_elbo:.2f}", valid=f"{history[-1]['valid_elbo']:.2f}"
            )
            if stop.is_set():
                raise TrainingInterrupted(
                    f"interrupted after epoch {epoch}; continue with: "
                    f"pyro-vae train --resume {run_dir}"
                )
    run = Run(config, model, guide, data, run_dir, history)
    write_images(run, run_dir)
    return run
