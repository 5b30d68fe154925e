"""TensorBoard logs of a run, read back with tensorboard's own reader."""

import json

import pytest

from pyro_vae import TrainConfig, train, train_pair
from pyro_vae.tracking import SCALARS
from tests.conftest import small_config
from tests.linear_gaussian import PIXELS, LinearGaussian
from tests.user_pairs import PyroDecoder, PyroEncoder

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(run_dir):
    events = event_accumulator.EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0}
    )
    events.Reload()
    return events


def test_a_run_logs_its_metrics_images_and_config(tmp_path):
    run = train(small_config(epochs=5, lr_schedule="exponential"), tmp_path, progress=False)
    events = read_events(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == run.history
    for column, tag in SCALARS.items():
        logged = {e.step: e.value for e in events.Scalars(tag)}
        expected = {r["epoch"]: r[column] for r in rows if r.get(column) is not None}
        assert logged.keys() == expected.keys(), tag
        assert logged == pytest.approx(expected, rel=1e-6), tag  # stored as float32
    for tag in ("prior_samples", "reconstructions"):
        assert [e.step for e in events.Images(tag)] == [0, 5]
    final = events.Scalars("final/test_elbo")
    assert final[-1].value == pytest.approx(rows[-1]["test_elbo"], rel=1e-6)
    # The config as hyperparameters: every field is named in the session's start record.
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert all(name.encode() in start for name in run.config.to_dict())


def test_no_tensorboard_writes_none(tmp_path, monkeypatch):
    train(small_config(epochs=1, tensorboard=False), tmp_path / "off", progress=False)
    assert not (tmp_path / "off" / "tensorboard").exists()
    monkeypatch.setattr("pyro_vae.callbacks.tensorboard_available", lambda: False)
    train(small_config(epochs=1), tmp_path / "absent", progress=False)  # not installed: quiet
    assert not (tmp_path / "absent" / "tensorboard").exists()


def test_a_user_pair_logs_scalars_and_no_images(tmp_path):
    x = LinearGaussian().sample(200).reshape(200, PIXELS)
    config = TrainConfig(epochs=5, batch_size=50, valid_size=50)
    train_pair(PyroDecoder(), PyroEncoder(), x, config, tmp_path, progress=False)
    events = read_events(tmp_path)
    assert [e.step for e in events.Scalars("elbo/validation")] == [0, 1, 2, 3, 4, 5]
    assert events.Tags()["images"] == []
