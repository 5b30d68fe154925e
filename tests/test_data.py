import re

import numpy as np
import pytest
import torch

from pyro_vae.data import load_data
from pyro_vae.errors import UserInputError
from tests.conftest import MNIST_RAW, SHARED_DATA, needs_mnist


def test_digits_is_embedded_and_split():
    data = load_data("digits", "dynamic")
    assert data.image_shape == (1, 8, 8)
    assert [data.split(s).shape[0] for s in ("train", "valid", "test")] == [1257, 180, 360]
    assert data.train.dtype == torch.uint8
    # Dynamic mode keeps grey training pixels and binarizes the evaluation splits once.
    assert len(data.train.unique()) > 2
    assert set(data.test.unique().tolist()) == {0, 255}
    assert len(data.test_labels.unique()) == 10


def test_splits_do_not_overlap():
    data = load_data("digits", "none")
    flat = {tuple(x.flatten().tolist()) for x in data.train}
    overlap = sum(tuple(x.flatten().tolist()) in flat for x in data.test)
    assert overlap < 5  # a handful of duplicate images exist in the UCI set itself


def test_test_set_binarization_is_fixed_across_loads():
    first, second = load_data("digits", "dynamic"), load_data("digits", "static")
    assert torch.equal(first.test, second.test)  # same fixed-seed draw in both modes
    assert torch.equal(first.test, load_data("digits", "dynamic").test)


def test_binarization_modes():
    grey = load_data("digits", "none")
    threshold = load_data("digits", "threshold")
    assert torch.equal(threshold.train, (grey.train > 127).to(torch.uint8) * 255)
    static = load_data("digits", "static")
    assert set(static.train.unique().tolist()) == {0, 255}
    # A Bernoulli draw keeps the mean grey level (checked over ~80k pixels).
    assert abs(static.train.float().mean() - grey.train.float().mean()) < 1.5


def test_dynamic_batches_are_fresh_draws_with_the_right_mean():
    data = load_data("digits", "dynamic")
    generator = torch.Generator().manual_seed(0)
    index = torch.arange(data.train.shape[0])
    first = data.train_batch(index, generator)
    second = data.train_batch(index, generator)
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    expected = data.train.float().mean() / 255
    assert abs(first.mean() - expected) < 0.01


def test_eval_batches_cover_the_split_in_order():
    data = load_data("digits", "static")
    batches = list(data.eval_batches("test", 100))
    assert [b.shape[0] for b in batches] == [100, 100, 100, 60]
    assert torch.equal(torch.cat(batches), data.test.float() / 255)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(
        UserInputError, match="valid datasets: digits, mnist, fashion-mnist, kmnist"
    ):
        load_data("cifar-100", "dynamic")


def test_missing_directory_offline_names_the_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserInputError, match=f"data directory {missing} does not exist"):
        load_data("mnist", "dynamic", data_dir=missing, download=False)


def test_missing_files_offline_name_the_raw_folder(tmp_path):
    with pytest.raises(UserInputError, match=r"not found in .*MNIST/raw and download is off"):
        load_data("mnist", "dynamic", data_dir=tmp_path, download=False)


def test_corrupt_idx_file_is_a_clear_error(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_RAW.iterdir() if MNIST_RAW.is_dir() else []:
        (raw / name.name).write_bytes(b"\x00\x00\x08\x03garbage")
    if not any(raw.iterdir()):
        pytest.skip("shared MNIST copy absent")
    with pytest.raises(UserInputError, match="could not load mnist"):
        load_data("mnist", "dynamic", data_dir=tmp_path, download=False)


@needs_mnist
@pytest.mark.parametrize("given", ["root", "folder", "raw"])
def test_mnist_from_the_shared_copy(given):
    data_dir = {"root": SHARED_DATA, "folder": SHARED_DATA / "MNIST", "raw": MNIST_RAW}[given]
    data = load_data("mnist", "static", data_dir=data_dir, download=False)
    assert data.image_shape == (1, 28, 28)
    # The last 10,000 training images are the validation split.
    assert [data.split(s).shape[0] for s in ("train", "valid", "test")] == [50_000, 10_000, 10_000]
    assert data.test_labels[:5].tolist() == [7, 2, 1, 0, 4]  # the canonical first test labels


@needs_mnist
def test_valid_size_zero_trains_on_all_60000_mnist_images():
    data = load_data("mnist", "static", data_dir=SHARED_DATA, download=False, valid_size=0)
    assert [data.split(s).shape[0] for s in ("train", "valid", "test")] == [60_000, 0, 10_000]


def test_valid_size_takes_the_last_training_images():
    default = load_data("digits", "none")
    assert [default.split(s).shape[0] for s in ("train", "valid", "test")] == [1257, 180, 360]
    every = torch.cat([default.train, default.valid])
    for size in (0, 1, 300):
        data = load_data("digits", "none", valid_size=size)
        assert torch.equal(torch.cat([data.train, data.valid]), every)
        assert data.valid.shape[0] == size and torch.equal(data.test, default.test)
    with pytest.raises(UserInputError, match="between 0 and 1436"):
        load_data("digits", "none", valid_size=1437)


def write_npz(path, **arrays):
    import numpy as np

    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    return str(path)


def test_own_images_from_an_npz_file(tmp_path):
    generator = torch.Generator().manual_seed(0)
    train = torch.rand(50, 6, 5, generator=generator)
    test = torch.rand(10, 6, 5, generator=generator)
    path = write_npz(tmp_path / "mine.npz", train=train, test=test, test_labels=torch.arange(10))
    data = load_data(path, "static")
    assert data.image_shape == (1, 6, 5)
    assert [data.split(s).shape[0] for s in ("train", "valid", "test")] == [45, 5, 10]
    assert data.test_labels.tolist() == list(range(10))
    grey = load_data(path, "none")
    assert torch.equal(grey.test, (test * 255).round().to(torch.uint8).unsqueeze(1))


def test_an_npz_valid_array_and_valid_size_conflict(tmp_path):
    images = torch.rand(4, 3, 3)
    path = write_npz(tmp_path / "v.npz", train=images, valid=images, test=images)
    assert load_data(path, "none").valid.shape[0] == 4
    with pytest.raises(UserInputError, match="has a valid array of its own"):
        load_data(path, "none", valid_size=2)
    no_valid = write_npz(tmp_path / "t.npz", train=images, test=images)
    assert load_data(no_valid, "none", valid_size=2).train.shape[0] == 2


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"train": [[[0.5, float("nan")]]], "test": [[[0.5, 0.5]]]}, "1 NaN or infinite values"),
        ({"train": [[0.5, 0.5]], "test": [[0.5, 0.5]]}, "must be (N, H, W) or (N, C, H, W)"),
        ({"train": [[[2.0, 0.0]]], "test": [[[0.0, 0.0]]]}, "values in [0, 2]"),
        ({"train": [[[0.0, 1.0]]]}, "has no test array (it has: train)"),
        ({"train": [[[0.0, 1.0]], [[1.0, 0.0]]], "test": [[[0.0, 0.0, 1.0]]]}, "shapes differ"),
        ({"train": [[[0.0]], [[1.0]]], "test": [[[0.0]]], "test_labels": [1, 2]}, "test_labels"),
        # channels-last colour images, string labels, a class no training image has
        ({"train": np.zeros((2, 8, 8, 3)), "test": np.zeros((1, 8, 8, 3))}, "channels-last"),
        (
            {"train": [[[0.0]], [[1.0]]], "test": [[[0.0]]], "train_labels": ["a", "b"]},
            "train_labels has dtype <U1; labels must be integers",
        ),
        (
            {
                "train": [[[0.0]], [[1.0]]],
                "test": [[[0.0]]],
                "train_labels": [0, 1],
                "test_labels": [2],
            },
            "test_labels holds label(s) [2] that no training image has",
        ),
    ],
)
def test_bad_npz_contents(tmp_path, arrays, message):
    with pytest.raises(UserInputError, match=re.escape(message)):
        load_data(write_npz(tmp_path / "bad.npz", **arrays), "dynamic")


def test_unreadable_npz(tmp_path):
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(UserInputError, match="is not a readable .npz file"):
        load_data(str(tmp_path / "bad.npz"), "dynamic")
    with pytest.raises(UserInputError, match="no data file at"):
        load_data(str(tmp_path / "absent.npz"), "dynamic")


def test_cifar10_missing_offline_names_folder_and_files(tmp_path):
    with pytest.raises(UserInputError, match=r"cifar10 files not found in .*cifar-10-batches-py"):
        load_data("cifar10", "none", data_dir=tmp_path, download=False)
    with pytest.raises(UserInputError, match="data_batch_1, …, data_batch_5, test_batch"):
        load_data("cifar10", "none", data_dir=tmp_path / "absent", download=False)


def test_channels_last_arrays_become_channels_first():
    import numpy as np

    from pyro_vae.data import _as_images

    array = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    images = _as_images(array)
    assert images.shape == (2, 3, 4, 4)
    assert images[1, 2, 3, 0] == array[1, 3, 0, 2]
    assert _as_images(torch.zeros(5, 28, 28, dtype=torch.uint8)).shape == (5, 1, 28, 28)
