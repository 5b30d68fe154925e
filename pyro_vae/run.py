"""A trained run as objects: its config, model, guide, data and history.

The folder it lives in, its files and their layouts are ``pyro_vae.run_folder``'s.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pyro_vae.config import USER_PAIR, TrainConfig, validate
from pyro_vae.data import ImageData, load_data
from pyro_vae.distributed import local_rank, local_world_size
from pyro_vae.errors import UserInputError
from pyro_vae.labels import label_arguments
from pyro_vae.models import VAEModel
from pyro_vae.plots import save_curves, save_image_grid, save_reconstructions
from pyro_vae.registry import build_vae, check_names, lookup, objective_name
from pyro_vae.run_folder import CHECKPOINTS, RunFolder  # noqa: F401 - CHECKPOINTS: the CLI's
from pyro_vae.semisupervised import has_labels, label_count


@dataclass
class Run:
    """A trained (or loaded) VAE: config, Pyro model and guide, data, per-epoch history."""

    config: TrainConfig
    model: VAEModel
    guide: nn.Module
    data: ImageData
    run_dir: Path | None = None
    history: list[dict] = field(default_factory=list)
    parameters_from: str = ""  # "epoch N, best validation ELBO (best.pt)", say

    @property
    def test_elbo(self) -> float | None:
        """The last recorded test ELBO in nats per image."""
        rows = [row for row in self.history if row.get("test_elbo") is not None]
        return rows[-1]["test_elbo"] if rows else None


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """CPU arithmetic that treats subnormal floats (|x| < 1.2e-38 in fp32) as zero, in this
    thread and in the threads it starts meanwhile; on exit this thread's mode is restored.

    Trained networks make such values in their tails (softplus and sigmoid far below zero,
    their gradients, squashed importance weights), and x86 CPUs handle each in microcode at
    many times the cost of a normal product: flushed, trained M2 steps ran 2.3 to 2.5 times
    faster (BENCHMARKS.md). Nothing here needs them: log-probabilities are kept in log
    space, and a weight of 1e-38 beside one of order one changes no fp32 sum. Threads take
    the mode of the thread that starts them, so ``train`` and the CLI enter this before
    their first tensor operation starts torch's intra-op threads (which keep the mode).
    The mode is restored on exit because other code in the process may need IEEE
    arithmetic (Hypothesis, for one, refuses to run without subnormals).
    """
    previous = _flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)


def _flushing_denormals() -> bool:
    """Whether this thread flushes subnormals now (torch has no getter): 1e-39 is one."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (auto, cpu, cuda) means for this process: under torchrun, the
    local rank's own GPU, so each of a machine's processes needs one."""
    processes = local_world_size()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        name = "cuda" if gpus >= processes else "cpu"
    if name == "cuda" and gpus == 0:
        raise UserInputError(
            "device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu"
        )
    if name == "cuda" and gpus < processes:
        raise UserInputError(
            f"--device cuda: torchrun started {processes} processes on this machine but only "
            f"{gpus} GPU(s) are visible; start at most {gpus} per machine "
            f"(--nproc-per-node {gpus}) or use --device cpu"
        )
    if name == "cuda" and processes > 1:
        return torch.device("cuda", local_rank())
    return torch.device(name)


def resolve_binarize(config: TrainConfig) -> str:
    if config.binarize:
        return config.binarize
    # The default is a property of the likelihood's kind; any image shape builds one to ask.
    return lookup("likelihood", config.likelihood)(config, (1, 1, 1)).default_binarize


def prepare(config: TrainConfig) -> tuple[ImageData, VAEModel, nn.Module]:
    """Check ``config``, load its data on its device, and build its model/guide there."""
    validate(config)
    check_names(config)
    device = resolve_device(config.device)
    if config.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserInputError(
            f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 "
            "arithmetic; use --precision fp32"
        )
    binarize = resolve_binarize(config)
    data = load_data(
        config.dataset, binarize, device, config.data_dir, config.download, config.valid_size
    )
    # The labels' count, read by the class-conditional models alone, which refuse None (a
    # data set without labels).
    num_classes = label_count(data.train_labels) if has_labels(data.train_labels) else None
    model, guide = build_vae(config, data.image_shape, num_classes)
    for split in ("train", "valid", "test"):
        model.likelihood.check_support(data.split(split), binarize)
    return data, model.to(device), guide.to(device)


def read_config(run_dir: Path) -> TrainConfig:
    return RunFolder(run_dir).read_config()


def read_run_config(run_dir: Path) -> TrainConfig:
    """The config of an existing run folder."""
    return RunFolder(run_dir).read_existing_config()


def read_history(run_dir: Path) -> list[dict]:
    return RunFolder(run_dir).read_history()


def load_run(run_dir: str | Path, device: str | None = None, checkpoint: str = "best") -> Run:
    """Rebuild a run from its folder: config, data, and the parameters of a checkpoint.

    ``device`` overrides the device the run was trained on (``"cpu"`` to inspect a GPU run).
    ``checkpoint="best"`` takes best.pt where early stopping wrote one (the parameters of the
    best validation ELBO), else the last checkpoint; ``"last"`` always the last.
    """
    folder = RunFolder(run_dir)
    config = folder.read_existing_config()
    if config.model == USER_PAIR:  # rebuilt through the builder it was trained with
        from pyro_vae.pairs import load_user_run

        return load_user_run(folder.path, checkpoint, device)
    if device is not None:
        config.device = device
    state, source = folder.read_parameters(checkpoint)
    data, model, guide = prepare(config)
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except (KeyError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:300]
        raise UserInputError(
            f"the checkpoint in {run_dir} does not fit the model of its config.json ({reason})"
        ) from None
    return Run(config, model, guide, data, folder.path, folder.read_history(), source)


def write_images(run: Run, out_dir: Path, num_images: int = 64) -> None:
    """samples.png, reconstructions.png and curves.png for ``run`` in ``out_dir``; a model
    without a decoder mean (a user's own pair) gets curves.png alone, and a note."""
    if run.history:
        save_curves(run.history, out_dir / "curves.png", objective=objective_name(run.config))
    if not hasattr(run.model, "sample_means"):
        warnings.warn(
            "samples.png and reconstructions.png skipped: they need the decoder mean "
            "E[x|z], which a user pair offers through its builder's "
            "pyro_vae.PairParts(model, guide, decoder_mean)",
            stacklevel=2,
        )
        return
    with torch.no_grad():
        save_image_grid(run.model.sample_means(num_images), out_dir / "samples.png",
                        caption="Samples: E[x | z], z ~ p(z)")  # fmt: skip
        originals = next(run.data.eval_batches("test", 32))
        labels = label_arguments(run.model, run.data.test_labels[:32])
        reconstructions = run.model.reconstruct(run.guide, originals, *labels)
        save_reconstructions(originals, reconstructions, out_dir / "reconstructions.png")
