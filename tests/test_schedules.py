"""Learning-rate schedules and early stopping: exact rates, resumable, best parameters kept."""

import math

import pytest
import torch
from torch.optim import lr_scheduler

from pyro_vae import load_run, train
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main
from pyro_vae.schedules import best_epoch, burda_factor
from tests.conftest import small_config
from tests.test_svi_resume import same_results


def test_burda_schedule_spends_3_to_the_i_epochs_at_each_rate():
    factors = [burda_factor(e) for e in range(3280)]
    for stage in range(8):
        expected = 10 ** (-stage / 7)
        assert sum(math.isclose(f, expected) for f in factors) == 3**stage
    assert factors[0] == 1.0 and math.isclose(factors[1], 10 ** (-1 / 7))
    assert math.isclose(factors[4], 10 ** (-2 / 7))
    assert burda_factor(10_000) == factors[-1] == 10 ** (-1)


def test_exponential_schedule_rates_and_bit_identical_resume(tmp_path):
    config = small_config(epochs=3, lr_schedule="exponential", lr_decay=0.5, lr=0.004)
    full = train(config, run_dir=tmp_path / "full", progress=False)
    assert [row["lr"] for row in full.history] == [None, 0.004, 0.002, 0.001]
    state = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert state["scheduler"]["last_epoch"] == 3
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0005)

    train(small_config(**{**config.to_dict(), "epochs": 1}), run_dir=tmp_path / "part",
          progress=False)  # fmt: skip
    train(config, run_dir=tmp_path / "part", progress=False, resume=True)
    same_results(tmp_path / "part", tmp_path / "full")


def test_plateau_schedule_cuts_the_rate_after_epochs_without_a_better_validation_elbo(tmp_path):
    config = small_config(epochs=8, lr=0.03, lr_schedule="plateau", lr_decay=0.5, lr_patience=0)
    run = train(config, run_dir=tmp_path / "run", progress=False)
    # The rates torch's own ReduceLROnPlateau gives on the recorded validation ELBOs.
    parameter = torch.zeros(1, requires_grad=True)
    replay = torch.optim.SGD([parameter], lr=0.03)
    reference = lr_scheduler.ReduceLROnPlateau(replay, "max", factor=0.5, patience=0)
    expected = []
    for row in run.history[1:]:
        expected.append(replay.param_groups[0]["lr"])
        reference.step(row["valid_elbo"])
    assert [row["lr"] for row in run.history[1:]] == expected
    assert expected[-1] < 0.03  # it did cut


@pytest.fixture(scope="module")
def stopped_early(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("early") / "run"
    config = small_config(epochs=40, lr=0.03, early_stopping=2)
    return train(config, run_dir=run_dir, progress=False)


def test_early_stopping_stops_after_patience_epochs_and_keeps_the_best(stopped_early):
    history = stopped_early.history
    best = best_epoch(history)
    assert history[-1]["epoch"] < 40  # it stopped
    assert history[-1]["epoch"] - best == 2
    valid = [row["valid_elbo"] for row in history]
    assert all(v < valid[best] for v in valid[best + 1 :])  # no better one after it
    run_dir = stopped_early.run_dir
    best_state = load_checkpoint(run_dir / "best.pt")
    last_state = load_checkpoint(run_dir / "checkpoint.pt")
    assert best_state["epoch"] == best and last_state["epoch"] == history[-1]["epoch"]
    reloaded = load_run(run_dir)
    assert reloaded.parameters_from == f"epoch {best}, best validation ELBO (best.pt)"
    for name, value in reloaded.model.state_dict().items():
        assert torch.equal(value, best_state["model"][name])
    last = load_run(run_dir, checkpoint="last")
    assert last.parameters_from.startswith(f"epoch {history[-1]['epoch']}, last")
    assert any(
        not torch.equal(value, last_state["model"][name])
        for name, value in best_state["model"].items()
    )


def test_a_run_that_stopped_early_does_not_train_on_when_resumed(stopped_early):
    before = load_checkpoint(stopped_early.run_dir / "checkpoint.pt")
    resumed = train(run_dir=stopped_early.run_dir, resume=True, progress=False)
    assert resumed.history == stopped_early.history
    after = load_checkpoint(stopped_early.run_dir / "checkpoint.pt")
    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items())


def test_commands_say_which_parameters_they_load(stopped_early, capsys, tmp_path):
    best = best_epoch(stopped_early.history)
    assert main(["sample", str(stopped_early.run_dir), "--out", str(tmp_path / "s.png")]) == 0
    assert f"parameters: epoch {best}, best validation ELBO (best.pt)" in capsys.readouterr().out
    out = tmp_path / "last.png"
    assert (
        main(["sample", str(stopped_early.run_dir), "--checkpoint", "last", "--out", str(out)]) == 0
    )
    assert "last (checkpoint.pt)" in capsys.readouterr().out


def test_valid_size_zero_trains_without_a_validation_elbo(tmp_path, capsys):
    run = train(small_config(epochs=1, valid_size=0), run_dir=tmp_path / "run", progress=False)
    assert run.data.train.shape[0] == 1437
    assert [row["valid_elbo"] for row in run.history] == [None, None]
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"]
    assert main(["evaluate", str(tmp_path / "run"), "--split", "valid", "--elbo-only"]) == 2
    assert "the valid split of this run is empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr-schedule", "cosine"], "unknown lr_schedule 'cosine'"),
        (["--lr-decay", "1.5"], "lr_decay must be a number in (0, 1)"),
        (["--early-stopping", "-1"], "early_stopping must be an integer >= 0"),
        (["--valid-size", "0", "--early-stopping", "3"], "valid_size 0 leaves no validation"),
        (["--valid-size", "0", "--lr-schedule", "plateau"], "valid_size 0 leaves no validation"),
        (["--valid-size", "-1"], "valid_size must be an integer >= 0"),
    ],
)
def test_bad_schedule_options_are_one_line_and_exit_2(flags, message, capsys, tmp_path):
    assert main(["train", *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
