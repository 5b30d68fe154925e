"""Figures: the numbers drawn are the numbers computed (the drawing itself is matplotlib's)."""

from __future__ import annotations

import pytest

from pyro_vae.plots import epoch_series, running_mean, save_late_curves


def test_running_mean_is_the_mean_of_each_window_at_its_last_epoch():
    epochs, means = running_mean([3, 4, 5, 6], [1.0, 2.0, 4.0, 8.0], window=2)
    assert epochs == [4, 5, 6]
    assert means == pytest.approx([1.5, 3.0, 6.0])
    assert running_mean([1, 2, 3], [1.0, 2.0, 3.0], window=3) == ([3], [pytest.approx(2.0)])
    assert running_mean([1, 2], [1.0, 2.0], window=3) == ([], [])  # fewer values than a window


def test_epoch_series_keeps_the_epochs_asked_for_where_the_history_has_the_column():
    history = [{"epoch": e, "test_elbo": -100.0 + e} for e in range(10)]
    history[6]["test_elbo"] = None  # an epoch that skipped the test set
    assert epoch_series(history, "test_elbo", 5, 8) == [(5, -95.0), (7, -93.0), (8, -92.0)]
    assert epoch_series(history, "valid_elbo", 0, 9) == []
    assert len(epoch_series(history, "test_elbo")) == 9  # every epoch but the skipped one


def test_late_curves_of_one_run_and_of_two(tmp_path):
    """Written for a run alone and for a run beside the one it is measured against (whose
    history may run on past it: the figure stops at the first run's last epoch)."""
    mine = [{"epoch": e, "test_elbo": -90.0 + 0.01 * e} for e in range(1, 101)]
    theirs = [{"epoch": e, "test_elbo": -90.5 + 0.01 * e} for e in range(1, 201)]
    save_late_curves({"Cb": mine}, tmp_path / "one.png", window=10)
    save_late_curves({"Cb": mine, "Bb": theirs}, tmp_path / "two.png", window=10, title="t")
    assert (tmp_path / "one.png").stat().st_size > 1000
    assert (tmp_path / "two.png").stat().st_size > (tmp_path / "one.png").stat().st_size


def test_a_caption_and_row_labels_are_drawn_into_the_grid(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from pyro_vae.plots import image_grid, save_image_grid, save_reconstructions

    images = torch.rand(18, 1, 28, 28)
    save_image_grid(images, tmp_path / "plain.png", nrow=9)
    plain = np.asarray(Image.open(tmp_path / "plain.png"))
    assert plain.shape[:2] == tuple(image_grid(images, 9).shape[1:])  # pixels alone
    save_image_grid(images, tmp_path / "c.png", 9, "What this shows", ["z[0]", "z[1]"])
    captioned = np.asarray(Image.open(tmp_path / "c.png").convert("L"))
    # room above for the caption and left for the labels, and ink in both
    assert captioned.shape[0] > plain.shape[0] + 20 and captioned.shape[1] > plain.shape[1] + 60
    left = captioned.shape[1] - plain.shape[1] - 15  # the columns left of the grid
    assert (captioned[:20] < 128).any() and (captioned[-plain.shape[0] :, :left] < 128).any()
    save_reconstructions(images[:8], images[8:16], tmp_path / "r.png")
    assert np.asarray(Image.open(tmp_path / "r.png")).shape[1] > image_grid(images[:8]).shape[2]
