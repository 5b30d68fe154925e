"""What the training loop tells the world, as callbacks it calls at named moments.

``Trainer.fit`` calls, on rank 0 and in order, each callback's

- ``on_train_start(trainer)``: before the first epoch it trains (a resumed run's too);
- ``on_epoch_end(trainer, row)``: after each epoch's metrics row (epoch 0, the untrained
  model, included), ``row`` being ``trainer.history[-1]``;
- ``on_train_end(trainer)``: after the last epoch, or the epoch early stopping ended on.

The run's own files are one such callback (:class:`MetricsFile`), TensorBoard another
(:class:`TensorBoardLogger`); a W&B or MLflow logger is a third, passed to
``pyro_vae.train(..., callbacks=[...])``, with no edit of the loop (anchors: pythae's
``training_callbacks.py``, Lightning's hooks). Checkpoints are not a callback: resuming
depends on them, so the loop writes them itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyro_vae.tracking import IMAGES_EVERY, TensorBoardLog, tensorboard_available

if TYPE_CHECKING:
    from pyro_vae.trainer import Trainer


class Callback:
    """Does nothing at every moment; a callback overrides the moments it needs."""

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass


class MetricsFile(Callback):
    """RUN_DIR/metrics.jsonl, rewritten whole from the history, so that a resumed run's file
    matches its checkpoint (and a line cut off by a crash is repaired on resume)."""

    def on_train_start(self, trainer: Trainer) -> None:
        trainer.folder.write_history(trainer.history)

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        trainer.folder.write_history(trainer.history)


class TensorBoardLogger(Callback):
    """Each metrics row as scalars, and every IMAGES_EVERY epochs and at the last, images
    (``pyro_vae.tracking``); at the end, the config as hyperparameters."""

    def __init__(self, trainer: Trainer):
        self.log = TensorBoardLog(trainer.run_dir, trainer.config)

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        self.log.epoch(row)
        if row["epoch"] % IMAGES_EVERY == 0 or row["epoch"] == trainer.config.epochs:
            data = trainer.data
            test_images = next(data.eval_batches("test", 32), None)
            if test_images is not None:
                labels = data.test_labels[:32]
                self.log.images(row["epoch"], trainer.model, trainer.guide, test_images, labels)

    def on_train_end(self, trainer: Trainer) -> None:
        self.log.close(trainer.history)


def default_callbacks(trainer: Trainer) -> list[Callback]:
    """The run folder's metrics file, and TensorBoard where asked for and installed."""
    callbacks: list[Callback] = [MetricsFile()]
    if trainer.config.tensorboard and tensorboard_available():
        callbacks.append(TensorBoardLogger(trainer))
    return callbacks
