"""examples/: every script a reader copies from runs, at tiny size (issue 41)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def example(monkeypatch, tmp_path):
    """Import an example by name (its folder on sys.path, as PYTHONPATH=examples does),
    with the working directory a temporary one, so its runs/ lands there."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.chdir(tmp_path)

    def load(name: str):
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


def test_the_pyro_tutorial_vae_trains_scores_and_reloads_by_name(example, tmp_path, capsys):
    from pyro_vae.cli import main

    tutorial = example("tutorial_vae")
    log_p = tutorial.main(["--epochs", "2", "--num-samples", "50", "--out", "run"])
    assert "test log p̂(x) =" in capsys.readouterr().out
    assert -60 < log_p < -20  # nats per 8x8 image, after two epochs
    assert json.loads((tmp_path / "run" / "pair.json").read_text())["builder"] == (
        "tutorial_vae:build"
    )
    assert main(["evaluate", "run", "--num-samples", "50", "--quiet"]) == 0
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert evaluation["num_images"] == 360
    assert evaluation["log_likelihood"] == pytest.approx(log_p, abs=1e-4)  # the same estimate
    assert (tmp_path / "run" / "samples.png").is_file()  # written by the training loop
    assert main(["viz", "run"]) == 0 and (tmp_path / "run" / "viz" / "samples.png").is_file()


def test_m2_on_the_digits_classifies_and_scores(example, capsys):
    error, log_p = example("m2_digits").main(["--labels", "50", "--epochs", "2",
                                               "--num-samples", "20"])  # fmt: skip
    assert 0 <= error <= 1 and log_p < 0
    assert "50 labels, 2 epochs: test error" in capsys.readouterr().out


def test_two_guides_are_compared_image_by_image(example, capsys):
    result = example("compare_guides").main(["--epochs", "1", "--num-samples", "20"])
    out = capsys.readouterr().out
    assert "iaf − diag-normal:" in out and "paired over 360 test images" in out
    assert result["standard_error"] > 0
