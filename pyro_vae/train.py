"""Stochastic variational inference for a VAE's Pyro model/guide pair.

Each step minimizes Pyro's ELBO loss (``Trace_ELBO`` or ``TraceMeanField_ELBO``) for one
minibatch: the loss module ``elbo(model, guide)`` is Pyro's own (``pyro.infer.ELBO.__call__``),
and one foreach Adam updates every parameter of model and guide at once, rather than the one
optimizer per parameter of ``pyro.optim``. The loss of a batch is a sum over its images;
reported ELBOs are divided by the number of images (nats per image).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae.checkpoint import CHECKPOINT_NAME, save_checkpoint
from pyro_vae.config import TrainConfig
from pyro_vae.data import ImageData
from pyro_vae.errors import UserInputError
from pyro_vae.evaluate import elbo_per_datapoint
from pyro_vae.registry import make_elbo
from pyro_vae.run import CONFIG_NAME, METRICS_NAME, Run, prepare, write_images

PROGRESS_EVERY = 25  # steps between progress-bar loss updates (each one syncs the device)


class NonFiniteLossError(UserInputError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.dataset}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir``; refuse one that already holds a run, or one that cannot be written."""
    if (run_dir / CHECKPOINT_NAME).exists() or (run_dir / CONFIG_NAME).exists():
        raise UserInputError(
            f"{run_dir} already holds a run; choose another --out so nothing in it is overwritten"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserInputError(f"cannot write to run folder {run_dir} ({error.strerror})") from None
    return run_dir


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from, as tensors and plain values (weights_only-safe)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": generator.get_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def svi_epoch(
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageData,
    generator: torch.Generator,
    batch_size: int,
    clip_norm: float | None = None,
    on_step: Callable[[int, torch.Tensor, int], None] | None = None,
) -> torch.Tensor:
    """One pass over the training images in a random order, one SVI step per minibatch.

    ``loss_fn(x)`` is a Pyro ELBO module (``elbo(model, guide)``) returning the batch's loss
    summed over images. Returns the epoch's summed loss as a device tensor, so the loop
    itself never waits for the device.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    n_train = data.train.shape[0]
    total = torch.zeros((), device=data.device)
    order = torch.randperm(n_train, generator=generator, device=data.device)
    for step, index in enumerate(order.split(batch_size)):
        loss = loss_fn(data.train_batch(index, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_norm, foreach=True)
        optimizer.step()
        total += loss.detach()
        if on_step is not None:
            on_step(step, loss, index.numel())
    return total


def train(config: TrainConfig, run_dir: str | Path | None = None, progress: bool = True) -> Run:
    """Train the VAE that ``config`` describes and write its run folder (see ``pyro_vae.run``).

    ``run_dir=None`` writes to ``runs/<dataset>-<timestamp>``. Returns the trained :class:`Run`.
    """
    pyro.clear_param_store()  # stale parameters of an earlier model must not shadow these
    pyro.set_rng_seed(config.seed)  # before the networks are built: their initialization too
    data, model, guide = prepare(config)
    n_train = data.train.shape[0]
    if config.batch_size > n_train:
        raise UserInputError(
            f"batch_size {config.batch_size} is larger than the {n_train} training images of "
            f"{config.dataset}; use --batch-size {n_train} or less"
        )
    run_dir = prepare_run_dir(Path(run_dir) if run_dir else default_run_dir(config))
    (run_dir / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    metrics_path = run_dir / METRICS_NAME

    device = data.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    elbo = make_elbo(config)
    loss_fn = elbo(model, guide)  # Pyro's ELBOModule: forward(x) is the differentiable loss
    # Check the pair once with Pyro's validation on (site shapes, model/guide match), then run
    # the hot loop without it; support was checked once on the whole data set.
    with pyro.validation_enabled(True), torch.no_grad():
        loss_fn(data.train_batch(torch.arange(min(8, n_train), device=device), generator))
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=config.lr, foreach=True)

    def evaluate_row(epoch: int, train_elbo: float | None, seconds: float | None) -> dict:
        row = {"epoch": epoch, "train_elbo": train_elbo, "seconds": seconds}
        for split in ("valid", "test"):
            row[f"{split}_elbo"] = elbo_per_datapoint(
                model, guide, elbo, data, split, config.eval_batch_size
            )
        return row

    def write_checkpoint(epoch: int) -> None:
        state = {
            "config": config.to_dict(),
            "epoch": epoch,
            "model": model.state_dict(),
            "guide": guide.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(generator),
        }
        save_checkpoint(run_dir / CHECKPOINT_NAME, state)

    history: list[dict] = []

    def record(row: dict) -> None:
        history.append(row)
        with metrics_path.open("a") as metrics:
            metrics.write(json.dumps(row) + "\n")
        write_checkpoint(row["epoch"])

    # Epoch 0 (the untrained model) is evaluated and checkpointed like every other epoch.
    record(evaluate_row(0, None, None))
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        disable=not progress,
        unit="step",
        mininterval=0.5,
        dynamic_ncols=True,
    )

    def show(step: int, loss: torch.Tensor, batch_size: int) -> None:
        bar.update()
        if step % PROGRESS_EVERY == 0:  # .item() syncs the device: not on every step
            bar.set_postfix(epoch=epoch, loss=f"{loss.item() / batch_size:.2f}")

    with bar, pyro.validation_enabled(False):
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            total = svi_epoch(
                loss_fn, optimizer, data, generator, config.batch_size, config.clip_norm, show
            )
            train_elbo = -total.item() / n_train  # one device sync per epoch
            seconds = time.perf_counter() - start
            if not math.isfinite(train_elbo):
                raise NonFiniteLossError(
                    f"the loss became non-finite in epoch {epoch}; the checkpoint of epoch "
                    f"{epoch - 1} in {run_dir} is intact; try a lower --lr or set --clip-norm"
                )
            row = evaluate_row(epoch, train_elbo, seconds)
            record(row)
            bar.set_postfix(
                epoch=epoch, train=f"{train_elbo:.2f}", valid=f"{row['valid_elbo']:.2f}"
            )
    run = Run(config, model, guide, data, run_dir, history)
    write_images(run, run_dir)
    return run
