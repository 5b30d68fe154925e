"""Policies of the training loop: when to checkpoint, what a non-finite step leads to, and
how a stop request (SIGINT, SIGTERM) reaches the loop."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from pyro_vae.svi import svi_step, svi_step_deferred

# Steps between progress-bar loss updates, between reads of deferred finiteness flags, and
# between the ranks' agreements on a mid-epoch checkpoint or stop.
PROGRESS_EVERY = 25


@dataclass
class CheckpointSchedule:
    """When a checkpoint is written: after every ``every`` epochs and the last one, after
    ``minutes`` minutes since the last one (mid-epoch too), and when a stop is requested."""

    every: int
    minutes: float | None
    last_epoch: int
    written_at: float = field(default_factory=time.monotonic)

    def mid_epoch_due(self) -> bool:
        elapsed = time.monotonic() - self.written_at
        return self.minutes is not None and elapsed >= 60 * self.minutes

    def epoch_end_due(self, epoch: int, stopping: bool) -> bool:
        return epoch % self.every == 0 or epoch == self.last_epoch or stopping

    def written(self) -> None:
        self.written_at = time.monotonic()


class FinitenessCheck:
    """Takes SVI steps and acts on the non-finite ones (NaN or inf in loss or gradient).

    Per step (the CPU; any device with ``--clip-norm``): each step's loss and gradients are
    checked at once, and a bad step's update is not made. Deferred (a GPU with the fused
    Adam, :func:`~pyro_vae.svi.defers_check`): nothing waits for the device; the fused
    optimizer skips a bad update on the device itself, and the flags are read every
    PROGRESS_EVERY steps and before a checkpoint (:meth:`settle`), so a bad step is
    reported up to PROGRESS_EVERY steps late, its update already skipped. Either way
    ``on_nonfinite(epoch, step, batch)`` decides whether the run goes on.
    """

    def __init__(
        self,
        defer: bool,
        clip_norm: float | None,
        global_loss: Callable[[torch.Tensor], torch.Tensor] | None,
        on_nonfinite: Callable[[int, int, tuple[torch.Tensor, ...]], None],
    ):
        self.defer = defer
        self.clip_norm = clip_norm
        self.global_loss = global_loss
        self.on_nonfinite = on_nonfinite
        self.pending: list[tuple] = []  # (epoch, step, flag, batch) per deferred step

    def step(
        self,
        loss_fn: Callable[..., torch.Tensor],
        optimizer: torch.optim.Optimizer,
        batch: tuple[torch.Tensor, ...],
        epoch: int,
        step: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One step on ``batch`` (the loss's arguments); returns its loss and what it adds
        to the epoch's total (None: nothing)."""
        if self.defer:
            loss, found = svi_step_deferred(loss_fn, optimizer, batch, self.global_loss)
            counted = torch.where(found > 0, 0.0, loss.detach())
            self.pending.append((epoch, step, found, batch))
            if len(self.pending) == PROGRESS_EVERY:
                self.settle()
            return loss, counted
        global_loss = self.global_loss
        loss, taken = svi_step(loss_fn, optimizer, batch, self.clip_norm, global_loss=global_loss)
        if not taken:
            self.on_nonfinite(epoch, step, batch)
            return loss, None
        return loss, loss.detach()

    def settle(self) -> None:
        """Read the deferred flags (one wait for the device) and act on the bad steps."""
        if not self.pending:
            return
        flags = torch.stack([found for _, _, found, _ in self.pending]).tolist()
        waiting = self.pending.copy()
        self.pending.clear()
        for (epoch, step, _, batch), bad in zip(waiting, flags):
            if bad:
                self.on_nonfinite(epoch, step, batch)


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


WHICH = {"valid": "validation", "test": "test"}


def run_failure(history: list[dict]) -> str | None:
    """Why a finished run failed, or None: its last validation or test ELBO is not finite,
    every step of its last epoch was skipped as non-finite, or it diverged (its last test
    ELBO is below the untrained model's, epoch 0). The CLI ends such a run with exit 2."""
    if len(history) < 2:
        return None
    first, last = history[0], history[-1]
    cause = (
        "; a learning rate too high is the usual cause: lower --lr, or bound the steps "
        "with --clip-norm"
    )
    for split in ("valid", "test"):
        value = last.get(f"{split}_elbo")
        if split == "valid" and value is None and first.get("valid_elbo") is None:
            continue  # no validation split
        if value is None or not math.isfinite(value):
            return f"the {WHICH[split]} ELBO of epoch {last['epoch']} is not finite{cause}"
    if last.get("train_elbo") is None:
        return f"every step of epoch {last['epoch']} was skipped as non-finite{cause}"
    untrained = first.get("test_elbo")
    if untrained is not None and math.isfinite(untrained) and last["test_elbo"] < untrained:
        return (
            f"training diverged: the test ELBO of epoch {last['epoch']}, {last['test_elbo']:.4g}, "
            f"is below the untrained model's, {untrained:.4g}{cause}"
        )
    return None
