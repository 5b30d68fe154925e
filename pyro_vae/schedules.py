"""Per-epoch learning-rate schedules and early stopping, on the validation ELBO.

Schedules are ``torch.optim.lr_scheduler`` objects, stepped once at the end of every epoch
(their state goes into the checkpoint, so a resumed run follows the same rates):

- ``constant``: none.
- ``exponential``: lr_e = lr · γ^e after e epochs (``ExponentialLR``, γ = ``lr_decay``).
- ``burda``: Burda et al. 2016 ("Importance Weighted Autoencoders", sec. 5): 3^i epochs
  at lr · 10^(-i/7) for i = 0, ..., 7 (3,280 epochs in all; with lr = 1e-3 the paper's
  rates), then the last rate (``LambdaLR``).
- ``plateau``: lr × ``lr_decay`` after ``lr_patience`` epochs without a better validation
  ELBO (``ReduceLROnPlateau``, mode "max").

Early stopping (Prechelt 1998): training stops after ``patience`` epochs without a better
validation ELBO than the best so far; the best epoch is read off the run's history, so a
resumed run decides as an uninterrupted one would. The test split chooses nothing.
"""

from __future__ import annotations

import torch
from torch.optim import lr_scheduler

BURDA_STAGES = 8  # i = 0..7


def burda_factor(epochs_done: int) -> float:
    """10^(-i/7) for the stage i that epoch ``epochs_done + 1`` is in: stage i spans 3^i
    epochs, starting after (3^i - 1) / 2 of them."""
    stage = 0
    while stage < BURDA_STAGES - 1 and (3 ** (stage + 1) - 1) // 2 <= epochs_done:
        stage += 1
    return 10 ** (-stage / 7)


# The schedules config.lr_schedule names (make_scheduler builds each).
SCHEDULES = ("constant", "exponential", "burda", "plateau")


def make_scheduler(
    name: str, optimizer: torch.optim.Optimizer, decay: float, patience: int
) -> lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None:
    """The scheduler of schedule ``name`` (None for ``constant``)."""
    if name == "constant":
        return None
    if name == "exponential":
        return lr_scheduler.ExponentialLR(optimizer, gamma=decay)
    if name == "burda":
        return lr_scheduler.LambdaLR(optimizer, burda_factor)
    if name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, "max", factor=decay, patience=patience)
    raise ValueError(f"unknown learning-rate schedule {name!r}")


def step_scheduler(scheduler, valid_elbo: float | None) -> None:
    """One epoch's step; ``plateau`` reads the epoch's validation ELBO."""
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        scheduler.step(valid_elbo)
    elif scheduler is not None:
        scheduler.step()


def best_epoch(history: list[dict]) -> int:
    """The epoch of the highest validation ELBO in ``history`` (the first, on ties)."""
    rows = [row for row in history if row.get("valid_elbo") is not None]
    return max(rows, key=lambda row: (row["valid_elbo"], -row["epoch"]))["epoch"]


def patience_exhausted(history: list[dict], patience: int) -> bool:
    """Whether ``patience`` epochs have passed without a better validation ELBO."""
    return patience > 0 and history[-1]["epoch"] - best_epoch(history) >= patience
