"""Image data sets chosen by name, held on the training device as uint8.

Every split is a ``(N, C, H, W)`` uint8 tensor of grey values 0..255; binarized splits hold
exactly 0 or 255, so ``x.float() / 255`` is the model's input in every mode. Batches are
gathered by index from a permutation drawn on the device, so no DataLoader (and no host to
device copy) sits in the training loop.

Binarization modes (for a Bernoulli likelihood; ``none`` keeps grey values):

- ``dynamic``: a fresh Bernoulli(pixel / 255) draw for every training batch (the usual
  "dynamically binarized MNIST"); validation and test are drawn once with a fixed seed.
- ``static``: one Bernoulli draw of every split with a fixed seed.
- ``threshold``: pixel > 127.
- ``none``: grey values in [0, 1].

The test set is binarized with the same fixed seed in every run, so test numbers of
different runs are comparable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pyro_vae.config import BINARIZE_MODES
from pyro_vae.errors import UserInputError

# Fixed seed of every one-off binarization (static train set, validation and test sets).
EVAL_BINARIZATION_SEED = 20260101
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IDX = "uncompressed IDX files"
CIFAR_FILES = ("data_batch_1", "…", "data_batch_5", "test_batch", "batches.meta")


@dataclass(frozen=True)
class TorchvisionSource:
    """How one torchvision data set lies on disk and how much of its training set validates."""

    cls: str  # the torchvision.datasets class
    folder: str  # the folder under --data-dir that torchvision reads
    subfolder: str  # where in it the files lie: "raw" for MNIST-like sets, "" for CIFAR-10
    files: tuple[str, ...]
    file_kind: str
    validation_size: int

    def files_folder(self, root: Path) -> Path:
        return root / self.folder / self.subfolder


TORCHVISION_DATASETS = {
    "mnist": TorchvisionSource("MNIST", "MNIST", "raw", MNIST_FILES, IDX, 10_000),
    "fashion-mnist": TorchvisionSource(
        "FashionMNIST", "FashionMNIST", "raw", MNIST_FILES, IDX, 10_000
    ),
    "kmnist": TorchvisionSource("KMNIST", "KMNIST", "raw", MNIST_FILES, IDX, 10_000),
    "cifar10": TorchvisionSource(
        "CIFAR10", "cifar-10-batches-py", "", CIFAR_FILES, "CIFAR-10 python version", 5_000
    ),
}
DATASET_NAMES = ("digits", *TORCHVISION_DATASETS)


@dataclass
class ImageData:
    """Train, validation and test splits of one data set on one device."""

    name: str
    binarize: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    valid_labels: torch.Tensor
    test_labels: torch.Tensor

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.train.device

    def split(self, name: str) -> torch.Tensor:
        if name not in ("train", "valid", "test"):
            raise UserInputError(f"unknown split {name!r}; valid splits: train, valid, test")
        return getattr(self, name)

    def split_labels(self, name: str) -> torch.Tensor:
        self.split(name)  # the same check of the name
        return getattr(self, f"{name}_labels")

    def inputs(self, name: str) -> torch.Tensor:
        """The split ``name`` as the model takes it: floats in [0, 1] (pixel / 255)."""
        return self.split(name).float() / 255

    def train_batch(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The training images at ``index`` as floats, freshly binarized under ``dynamic``."""
        x = self.train[index].float().div_(255)
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        return x

    def eval_batches(self, split: str, batch_size: int) -> Iterator[torch.Tensor]:
        """A fixed split in order, as float batches; the values never change between calls."""
        images = self.split(split)
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size].float().div_(255)


@dataclass
class TrainingBatches:
    """The batches of a training epoch. ``size`` images make an epoch, visited in the order
    of a permutation of ``range(size)``; ``batch(index, generator, binarizer, shard)`` is
    the tuple of tensors a step's loss takes for the positions ``index`` of that order."""

    data: ImageData
    with_labels: bool = False  # cvae: (images, labels); else (images,)

    @property
    def size(self) -> int:
        return self.data.train.shape[0]

    # what an epoch passes over, in messages
    description = "training"

    def batch(
        self,
        index: torch.Tensor,
        generator: torch.Generator,
        binarizer: torch.Generator,
        shard: Callable[[torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, ...]:
        index = shard(index)
        x = self.data.train_batch(index, binarizer)
        return (x, self.data.train_labels[index]) if self.with_labels else (x,)

    def program_arguments(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The arguments of one call of model and guide in ``batch`` (a step's loss may
        call them more than once, on parts of it): here all of it."""
        return batch


def default_data_dir() -> Path:
    return Path(os.environ.get("PYRO_VAE_DATA_DIR", "~/.cache/pyro-vae/data")).expanduser()


def load_data(
    name: str,
    binarize: str,
    device: torch.device | str = "cpu",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    valid_size: int | None = None,
) -> ImageData:
    """Load data set ``name`` (or an ``.npz`` file of your own images, see :func:`_load_npz`),
    binarize it and move every split to ``device``.

    ``valid_size`` training images (the last ones) validate; None: the data set's own
    choice; 0: none, every training image trains (the validation split is then empty).
    """
    if name not in DATASET_NAMES and not name.endswith(".npz"):
        raise UserInputError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(DATASET_NAMES)}, "
            "or the path of an .npz file of your own images"
        )
    if binarize not in BINARIZE_MODES:
        raise UserInputError(
            f"unknown binarize mode {binarize!r}; valid modes: {', '.join(BINARIZE_MODES)}"
        )
    if name == "digits":
        (train, train_y), (test, test_y), n_valid = _load_digits()
    elif name.endswith(".npz"):
        (train, train_y), (test, test_y), n_valid = _load_npz(Path(name).expanduser(), valid_size)
    else:
        root = Path(data_dir) if data_dir else default_data_dir()
        (train, train_y), (test, test_y), n_valid = _load_torchvision(name, root, download)
    n_valid = n_valid if valid_size is None else valid_size
    if not 0 <= n_valid < train.shape[0]:
        raise UserInputError(
            f"{n_valid} validation images leave no training image of the {train.shape[0]} of "
            f"{name}; use --valid-size between 0 and {train.shape[0] - 1}"
        )
    cut = train.shape[0] - n_valid  # the last n_valid training images validate
    (train, train_y), (valid, valid_y) = (train[:cut], train_y[:cut]), (train[cut:], train_y[cut:])
    # Each split has its own fixed seed, so the test set's draw is the same in every mode.
    if binarize in ("static", "threshold"):
        train = _binarize_once(train, binarize, EVAL_BINARIZATION_SEED)
    if binarize != "none":
        valid = _binarize_once(valid, binarize, EVAL_BINARIZATION_SEED + 1)
        test = _binarize_once(test, binarize, EVAL_BINARIZATION_SEED + 2)
    return ImageData(
        name=name,
        binarize=binarize,
        train=train.to(device),
        valid=valid.to(device),
        test=test.to(device),
        train_labels=train_y.to(device),
        valid_labels=valid_y.to(device),
        test_labels=test_y.to(device),
    )


def _binarize_once(images: torch.Tensor, mode: str, seed: int) -> torch.Tensor:
    if mode == "threshold":
        binary = images > 127
    else:  # dynamic and static: one Bernoulli draw with a fixed seed
        generator = torch.Generator().manual_seed(seed)
        binary = torch.bernoulli(images.float() / 255, generator=generator).bool()
    return binary.to(torch.uint8) * 255


def _load_digits() -> tuple:
    """scikit-learn's bundled 8x8 digits (UCI, 1,797 images, grey levels 0..16).

    A fixed permutation splits it into 1,437 training images (the last 180 of which
    validate by default) and 360 test images.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).mul(255 / 16).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    n_test, n_valid = 360, 180
    cut = images.shape[0] - n_test
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:]), n_valid


def _images_from_array(array, key: str, path: Path) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` from an array of grey values (uint8, or floats in [0, 1])."""
    import numpy as np

    array = np.asarray(array)
    if array.ndim not in (3, 4) or 0 in array.shape:
        raise UserInputError(
            f"{path}: {key} has shape {array.shape}; images must be (N, H, W) or (N, C, H, W)"
        )
    if array.ndim == 3:
        array = array[:, None]
    if array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3, 4):
        raise UserInputError(
            f"{path}: {key} has shape {array.shape}, which looks channels-last (N, H, W, C); "
            "images must be channels-first (N, C, H, W): np.moveaxis(images, -1, 1)"
        )
    if array.dtype == np.uint8:
        return torch.from_numpy(array.copy())
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise UserInputError(f"{path}: {key} has dtype {array.dtype}; use uint8 or floats")
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise UserInputError(f"{path}: {key} has {bad} NaN or infinite values; remove or fill them")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        raise UserInputError(
            f"{path}: {key} has values in [{low:g}, {high:g}]; "
            "give uint8 0..255 or floats in [0, 1]"
        )
    return torch.from_numpy(np.rint(array * 255).astype(np.uint8))


def _load_npz(path: Path, valid_size: int | None = None) -> tuple:
    """Your own images: an .npz with arrays ``train`` and ``test``, optionally ``valid`` and
    ``train_labels``/``valid_labels``/``test_labels``. Without ``valid``, the last 10% of
    ``train`` is the validation split (``valid_size`` images, where given).

    Returns the training images (a ``valid`` array appended), the test images and how many
    of the training images validate, as :func:`load_data` splits them."""
    import numpy as np

    if not path.is_file():
        raise UserInputError(f"no data file at {path}")
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as error:  # not a zip, truncated, or an object array
        raise UserInputError(f"{path} is not a readable .npz file ({error})") from None
    missing = [key for key in ("train", "test") if key not in arrays]
    if missing:
        raise UserInputError(
            f"{path} has no {' or '.join(missing)} array (it has: {', '.join(arrays) or 'none'})"
        )
    if "valid" in arrays and valid_size is not None:
        raise UserInputError(
            f"{path} has a valid array of its own; --valid-size splits only a train array "
            "without one"
        )
    images = {
        k: _images_from_array(arrays[k], k, path) for k in ("train", "valid", "test") if k in arrays
    }
    shapes = {k: tuple(v.shape[1:]) for k, v in images.items()}
    if len(set(shapes.values())) > 1:
        raise UserInputError(f"{path}: the splits' image shapes differ ({shapes})")
    if min(images[k].shape[0] for k in images) < 1:
        raise UserInputError(f"{path}: every split needs at least one image")
    splits = {}
    for key in images:
        labels = arrays.get(f"{key}_labels")
        n = images[key].shape[0]
        if labels is not None and not np.issubdtype(np.asarray(labels).dtype, np.integer):
            raise UserInputError(
                f"{path}: {key}_labels has dtype {np.asarray(labels).dtype}; labels must be "
                "integers 0..C-1 (map names to numbers first)"
            )
        labels = torch.full((n,), -1) if labels is None else torch.as_tensor(labels).long()
        if labels.shape != (n,):
            raise UserInputError(
                f"{path}: {key}_labels has shape {tuple(labels.shape)}, not ({n},)"
            )
        splits[key] = (images[key], labels)
    known = set(splits["train"][1].tolist())
    for key, (_, labels) in splits.items():
        unseen = sorted(set(labels.tolist()) - known - {-1})
        if unseen and -1 not in known:
            raise UserInputError(
                f"{path}: {key}_labels holds label(s) {unseen[:5]} that no training image has; "
                "every class must have training images"
            )
    if "valid" not in splits:
        return splits["train"], splits["test"], max(1, images["train"].shape[0] // 10)
    (train, train_y), (valid, valid_y) = splits["train"], splits["valid"]
    joined = (torch.cat([train, valid]), torch.cat([train_y, valid_y]))
    return joined, splits["test"], valid.shape[0]


def _resolve_root(data_dir: Path, folder: str) -> Path:
    """Accept the root that holds ``FOLDER``, the ``FOLDER`` directory, or ``FOLDER/raw``."""
    if data_dir.name == "raw" and data_dir.parent.name == folder:
        return data_dir.parent.parent
    if data_dir.name == folder:
        return data_dir.parent
    return data_dir


def _as_images(data) -> torch.Tensor:
    """uint8 (N, C, H, W) from torchvision's ``.data``: (N, H, W) tensors or (N, H, W, C) arrays."""
    data = torch.as_tensor(data)
    return data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2).contiguous()


def _load_torchvision(name: str, data_dir: Path, download: bool) -> tuple:
    from torchvision import datasets

    source = TORCHVISION_DATASETS[name]
    root = _resolve_root(data_dir, source.folder)
    files = source.files_folder(root)
    how_to_fix = (
        f"put {', '.join(source.files)} ({source.file_kind}) in {files}, "
        f"or pass --data-dir pointing at a folder that holds {source.folder}/"
    )
    if not download and not root.is_dir():
        raise UserInputError(f"data directory {root} does not exist; {how_to_fix}")
    cls = getattr(datasets, source.cls)
    try:
        try:
            train_set = cls(str(root), train=True, download=False)
        except RuntimeError:
            if not download:
                raise UserInputError(
                    f"{name} files not found in {files} and download is off; {how_to_fix}"
                ) from None
            train_set = cls(str(root), train=True, download=True)
        test_set = cls(str(root), train=False, download=False)
    except UserInputError:
        raise
    except Exception as error:  # a failed download (offline) or an unreadable file
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserInputError(
            f"could not load {name} from {files} ({reason}); {how_to_fix}"
        ) from None
    train_x, train_y = _as_images(train_set.data), torch.as_tensor(train_set.targets).long()
    test_x, test_y = _as_images(test_set.data), torch.as_tensor(test_set.targets).long()
    return (train_x, train_y), (test_x, test_y), source.validation_size
