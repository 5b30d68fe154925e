"""Interrupted training resumes bit for bit (on the CPU), and nothing saved is lost."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyro_vae import TrainConfig, UserInputError, load_run, train
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main
from tests.conftest import small_config

CONFIG = dict(epochs=12, hidden_dims=[32], latent_dim=4, batch_size=64, device="cpu")


def same_results(a_dir, b_dir):
    """Parameters and optimizer state bit-identical; metrics identical but for wall time."""
    a, b = load_checkpoint(a_dir / "checkpoint.pt"), load_checkpoint(b_dir / "checkpoint.pt")
    for part in ("model", "guide"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), f"{part}.{name}"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)

    def rows(run_dir):
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]

    assert rows(a_dir) == rows(b_dir)


def start_training(run_dir, *extra):
    flags = ["--epochs", "12", "--hidden-dims", "32", "--latent-dim", "4", "--batch-size", "64"]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pyro_vae",
            "train",
            *flags,
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(run_dir),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_mid_epoch_checkpoint(run_dir, process, min_epochs=2):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            position = load_checkpoint(run_dir / "checkpoint.pt")["position"]
        except UserInputError:
            position = None  # not written yet
        if position and position["epochs_done"] >= min_epochs and position["step"] > 0:
            return position
        time.sleep(0.005)
    pytest.fail(f"no mid-epoch checkpoint before the run ended: {process.communicate()}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train(TrainConfig(**CONFIG), run_dir=run_dir, progress=False)
    return run_dir


def test_sigkill_then_resume_is_bit_identical(tmp_path, uninterrupted, capsys):
    run_dir = tmp_path / "run"
    # A checkpoint after every step, so the kill lands between mid-epoch checkpoints.
    process = start_training(run_dir, "--checkpoint-minutes", "0")
    wait_for_mid_epoch_checkpoint(run_dir, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    same_results(run_dir, uninterrupted)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_checkpoint_the_exact_position(tmp_path, uninterrupted, sig, capsys):
    run_dir = tmp_path / "run"
    process = start_training(run_dir, "--checkpoint-minutes", "0")
    wait_for_mid_epoch_checkpoint(run_dir, process, min_epochs=1)
    os.kill(process.pid, sig)
    _, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 130
    assert "continue with: pyro-vae train --resume" in err and "Traceback" not in err
    # Its parameters are those of the step it stopped after, and evaluate says so.
    position = load_checkpoint(run_dir / "checkpoint.pt")["position"]
    done, step = position["epochs_done"], position["step"]
    steps = math.ceil(position["order"].numel() / CONFIG["batch_size"])
    assert load_run(run_dir, device="cpu").parameters_from == (
        f"epoch {done} and {step} of {steps} steps of epoch {done + 1}, last (checkpoint.pt)"
    )
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert load_run(run_dir, device="cpu").parameters_from.endswith(", last (checkpoint.pt)")
    same_results(run_dir, uninterrupted)


def test_extending_a_finished_run_equals_training_longer(tmp_path):
    short = train(small_config(epochs=1), run_dir=tmp_path / "short", progress=False)
    longer = train(small_config(epochs=3), run_dir=tmp_path / "long", progress=False)
    resumed = train(small_config(epochs=3), run_dir=short.run_dir, progress=False, resume=True)
    assert [r["test_elbo"] for r in resumed.history] == [r["test_elbo"] for r in longer.history]
    same_results(short.run_dir, longer.run_dir)


def test_resume_with_a_different_model_names_the_fields(tmp_path):
    train(small_config(epochs=1), run_dir=tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(UserInputError, match=r"latent_dim: 8 -> 9; lr: 0.001 -> 0.01"):
        train(small_config(latent_dim=9, lr=0.01), run_dir=tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_resume_cli_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "cannot resume: run folder" in capsys.readouterr().err
    train(small_config(epochs=0), run_dir=tmp_path / "run", progress=False)
    assert main(["train", "--resume", str(tmp_path / "run"), "--out", str(tmp_path / "x")]) == 2
    assert "--resume and --out conflict" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--resume",
                str(tmp_path / "run"),
                "--guide",
                "diag-normal",
                "--latent-dim",
                "3",
            ]
        )
        == 2
    )
    assert "latent_dim: 8 -> 3" in capsys.readouterr().err


def test_checkpoint_and_config_that_disagree_are_refused(tmp_path):
    train(small_config(epochs=0), run_dir=tmp_path / "run", progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["latent_dim"] = 3
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="checkpoint and config.json .* disagree"):
        train(run_dir=tmp_path / "run", resume=True)
    with pytest.raises(UserInputError, match="does not fit the model of its config.json"):
        load_run(tmp_path / "run")


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_skip_nonfinite_skips_then_stops(tmp_path):
    with pytest.warns(UserWarning, match="skipped a non-finite step at epoch 1"):
        with pytest.raises(UserInputError, match="non-finite"):
            train(small_config(lr=1e30, skip_nonfinite=2), run_dir=tmp_path / "r", progress=False)


def test_resume_after_an_extension_that_stopped_before_its_checkpoint(tmp_path):
    train(small_config(epochs=1), run_dir=tmp_path / "run", progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["epochs"] = 2  # what an interrupted "--resume --epochs 2" leaves behind
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    resumed = train(run_dir=tmp_path / "run", resume=True, progress=False)
    assert [row["epoch"] for row in resumed.history] == [0, 1, 2]


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_afresh(tmp_path):
    fresh = train(small_config(epochs=1), run_dir=tmp_path / "fresh", progress=False)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(small_config(epochs=1).to_dict()))
    resumed = train(run_dir=tmp_path / "run", resume=True, progress=False)
    assert resumed.history == [
        {**row, "seconds": resumed.history[i]["seconds"]} for i, row in enumerate(fresh.history)
    ]
