"""TensorBoard logs of a training run: ``RUN_DIR/tensorboard/``, written by rank 0.

Per epoch, the scalars of its metrics.jsonl row: the train, validation and test ELBO, the
validation and test ELBO's reconstruction and KL terms, β (``kl_weight``), the learning
rate and the epoch's seconds; every ``IMAGES_EVERY`` epochs and at the last, a grid of
decoder means of prior samples and test images above their reconstructions (registry
models; a user's own pair has no decoder mean); at the end, the config as hyperparameters
with the final metrics. On when the ``tensorboard`` package is installed (``pip install
'pyro-vae[tensorboard]'``) unless ``--no-tensorboard``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from pyro_vae.config import TrainConfig
from pyro_vae.evaluation import fixed_seed
from pyro_vae.labels import label_arguments
from pyro_vae.plots import image_grid, reconstruction_rows

IMAGES_EVERY = 5
TENSORBOARD_DIR = "tensorboard"
# metrics.jsonl columns and the TensorBoard tags they are written under
SCALARS = {
    "train_elbo": "elbo/train",
    "valid_elbo": "elbo/validation",
    "test_elbo": "elbo/test",
    "valid_reconstruction": "reconstruction/validation",
    "valid_kl": "kl/validation",
    "test_reconstruction": "reconstruction/test",
    "test_kl": "kl/test",
    "kl_weight": "beta",
    "lr": "learning_rate",
    "seconds": "seconds_per_epoch",
}


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLog:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``RUN_DIR/tensorboard/``."""

    def __init__(self, run_dir: Path, config: TrainConfig):
        from torch.utils.tensorboard import SummaryWriter

        self.config = config
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))

    def epoch(self, row: dict) -> None:
        for column, tag in SCALARS.items():
            if row.get(column) is not None:
                self.writer.add_scalar(tag, row[column], row["epoch"])
        self.writer.flush()

    @torch.no_grad()
    def images(
        self, epoch: int, model, guide, test_images: torch.Tensor, test_labels: torch.Tensor
    ) -> None:
        """Prior samples and reconstructions, drawn under a fixed seed: the same codes every
        time (a picture of the decoder's progress), and the run's random streams untouched
        (a resumed run stays bit-identical whichever epochs logged images)."""
        if not hasattr(model, "sample_means"):  # a user's own pair: no decoder mean
            return
        with fixed_seed(0, test_images.device):
            samples = model.sample_means(64)
            originals = test_images[:32]
            labels = label_arguments(model, test_labels[:32])
            reconstructed = model.reconstruct(guide, originals, *labels)
            rows, nrow = reconstruction_rows(originals, reconstructed)
        self.writer.add_image("prior_samples", image_grid(samples), epoch)
        self.writer.add_image("reconstructions", image_grid(rows, nrow), epoch)
        self.writer.flush()

    def close(self, history: list[dict]) -> None:
        """The config as hyperparameters beside the final metrics, then close the file."""
        hparams = {
            name: value if isinstance(value, (bool, int, float, str)) else str(value)
            for name, value in self.config.to_dict().items()
        }
        final = history[-1]
        metrics = {
            f"final/{column}": final[column]
            for column in ("valid_elbo", "test_elbo", "valid_kl", "test_kl")
            if final.get(column) is not None
        }
        self.writer.add_hparams(hparams, metrics, run_name=".")
        self.writer.close()
