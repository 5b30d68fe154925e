"""Run folders that cannot be clobbered, files that cannot be half-read, failed runs that
say so (pyro_vae.run_folder, and the CLI's exit status)."""

import json
import os
import subprocess
import sys
import time

import pytest

from pyro_vae.cli import main
from pyro_vae.errors import UserInputError
from pyro_vae.run_folder import RunFolder

SMALL = ["--epochs", "1", "--hidden-dims", "16", "--latent-dim", "2", "--quiet",
         "--no-tensorboard"]  # fmt: skip


def test_a_second_writer_is_refused_naming_the_process_that_holds_the_folder(tmp_path, capsys):
    folder = RunFolder(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pyro_vae.run_folder import RunFolder\n"
         f"with RunFolder({str(folder.path)!r}).lock('pyro-vae train'):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            UserInputError, match=rf"in use by process {holder.pid} \(pyro-vae train\)"
        ):
            with folder.lock("pyro-vae evaluate"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder.lock("pyro-vae evaluate"):  # the lock went with the process
        pass


def test_out_is_refused_on_a_users_folder_and_the_root(tmp_path, capsys):
    mine = tmp_path / "u"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text("notes\n")
    assert main(["train", *SMALL, "--out", str(mine)]) == 2
    assert "is not empty and holds no run (metrics.jsonl)" in capsys.readouterr().err
    assert (mine / "metrics.jsonl").read_text() == "notes\n"  # untouched
    assert main(["train", *SMALL, "--out", "/"]) == 2
    assert "--out / is the root folder" in capsys.readouterr().err


def test_stale_temporary_files_are_removed_live_ones_kept(tmp_path):
    folder = RunFolder(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".checkpoint.pt.tmp-{dead.pid}"
    live = tmp_path / f".checkpoint.pt.tmp-{os.getpid()}"
    stale.write_text("x")
    live.write_text("x")
    with folder.lock("test"):
        pass
    assert not stale.exists() and live.exists()


def test_a_diverged_or_nonfinite_run_ends_with_exit_2_and_valid_json(tmp_path, capsys):
    assert main(["train", *SMALL, "--epochs", "2", "--lr", "1000", "--out",
                 str(tmp_path / "lr")]) == 2  # fmt: skip
    assert "training diverged" in capsys.readouterr().err
    assert main(["train", *SMALL, "--lr", "1e8", "--skip-nonfinite", "1000", "--out",
                 str(tmp_path / "nan")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "is not finite" in err and "lower --lr" in err
    for line in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # no bare NaN tokens: valid JSON, null for non-finite


def test_a_truncated_metrics_file_is_one_line_naming_the_file(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(run)]) == 0
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"epoch": 2, "train_')
    capsys.readouterr()
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert f"{metrics} line 3 is not valid JSON" in err and "--resume" in err


def test_compare_refuses_to_pair_another_split(tmp_path, capsys):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        assert main(["train", *SMALL, "--out", str(run)]) == 0
    assert main(["evaluate", str(runs[0]), "--num-samples", "20", "--quiet"]) == 0
    assert main(["evaluate", str(runs[1]), "--num-samples", "20", "--quiet", "--split",
                 "valid"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["compare", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    assert "not paired: valid split against test" in out
    summary = json.loads((runs[0] / "evaluation.json").read_text())
    assert summary["method"] == "is" and summary["num_samples"] == 20
    assert len(summary["split_sha256"]) == 64


def test_a_checkpoint_of_another_model_is_refused_on_resume(tmp_path, capsys):
    import torch

    from pyro_vae.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(run)]) == 0
    state = load_checkpoint(run / "checkpoint.pt")
    state["model"] = {"decoder.net.0.weight": torch.zeros(3, 3)}
    save_checkpoint(run / "checkpoint.pt", state)
    capsys.readouterr()
    started = time.monotonic()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the run of its config.json" in err and "Traceback" not in err
    assert time.monotonic() - started < 60


def test_evaluations_are_kept_by_what_they_measured(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(run)]) == 0
    for k, images in (("30", "10"), ("20", "5")):
        assert main(["evaluate", str(run), "--num-samples", k, "--max-images", images,
                     "--quiet"]) == 0  # fmt: skip
    kept = sorted(p.name for p in (run / "evaluations").iterdir())
    assert kept == ["test-is-K20-5images.csv", "test-is-K20-5images.json",
                    "test-is-K30-10images.csv", "test-is-K30-10images.json"]  # fmt: skip
    assert "evaluations/test-is-K20-5images.json" in capsys.readouterr().out
    assert json.loads((run / "evaluation.json").read_text())["num_images"] == 5  # the latest


def test_a_yaml_config_is_refused_naming_the_formats(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("epochs: 1\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "is YAML; use JSON or TOML" in capsys.readouterr().err


def test_early_stopping_says_when_and_prints_the_best_epochs_test_elbo(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--epochs", "30", "--early-stopping", "1", "--lr", "0.05",
                 "--hidden-dims", "16", "--latent-dim", "2", "--quiet", "--no-tensorboard",
                 "--out", str(run)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "early stopping: no better validation ELBO for 1 epochs" in out
    assert "the best validation ELBO's, kept in best.pt" in out


def test_a_full_disk_is_one_line_and_the_last_good_checkpoint_is_kept(
    tmp_path, monkeypatch, capsys
):
    import errno

    import pyro_vae.run_folder as run_folder

    run = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(run)]) == 0
    before = (run / "checkpoint.pt").read_bytes()
    real = run_folder.save_checkpoint

    def full_disk(path, state):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(run_folder, "save_checkpoint", full_disk)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert (run / "checkpoint.pt").read_bytes() == before  # the last good one
    monkeypatch.setattr(run_folder, "save_checkpoint", real)
