"""Data-parallel training and evaluation: gloo on loopback, on the CPU, as in CI."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from pyro_vae import UserInputError, train
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main
from pyro_vae.distributed import ProcessGroup
from tests.conftest import small_config

ROOT = Path(__file__).resolve().parents[1]
# Small enough that the two processes' start-up dominates: seconds per run on two cores.
TRAIN_FLAGS = ["--hidden-dims", "32", "--latent-dim", "4", "--batch-size", "64", "--device", "cpu"]


def torchrun(*args: str, nproc: int = 2, restarts: int = 0, **popen) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={restarts}",
        "-m",
        "pyro_vae",
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        **popen,
    )  # fmt: skip


def finished(process: subprocess.Popen, timeout: float = 240) -> tuple[str, str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# One step on two ranks is one step of one process on the global batch


def _global_batch():
    from pyro_vae.data import load_data

    data = load_data("digits", "static")
    return data, data.train_batch(torch.arange(64), torch.Generator().manual_seed(0))


def _prepared(config):
    """Model, guide, loss module and optimizer as the trainer builds them (same seed)."""
    import pyro

    from pyro_vae.objectives import LatentScale
    from pyro_vae.registry import build_vae
    from pyro_vae.svi import adam
    from pyro_vae.trainer import build_loss

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    data, batch = _global_batch()
    model, guide = build_vae(config, data.image_shape)
    loss, mode = build_loss(config, data, model, guide, LatentScale(1.0), batch[:32])
    optimizer = adam(list(model.parameters()) + list(guide.parameters()), config.lr)
    return model, guide, loss, mode, optimizer, batch


def _one_step_on_a_rank(
    rank: int, world_size: int, port: int, compile_mode: str, out: str, poison: bool = False
):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    import pyro

    from pyro_vae.distributed import process_group
    from pyro_vae.evaluation import fixed_seed
    from pyro_vae.svi import svi_step

    config = small_config(hidden_dims=[32], latent_dim=4, compile=compile_mode)
    model, guide, loss, mode, optimizer, batch = _prepared(config)
    with process_group(torch.device("cpu")) as group:
        x = group.shard(batch)
        step_loss = group.loss_module(loss, model, guide, (x,))
        if poison and rank == 1:
            x = x * float("nan")  # a non-finite loss on one rank only
        # Rank r's draws, as the reference makes them; Pyro's validation off, as in training.
        with fixed_seed(100 + rank, x.device), pyro.validation_enabled(False):
            reported, taken = svi_step(step_loss, optimizer, x, global_loss=group.global_loss)
    state = {**model.state_dict(), **{f"guide.{k}": v for k, v in guide.state_dict().items()}}
    torch.save({"params": state, "loss": reported, "taken": taken, "mode": mode}, out)


def _spawn_one_step(tmp_path, compile_mode: str, poison: bool = False) -> list[dict]:
    outs = [str(tmp_path / f"rank{r}.pt") for r in range(2)]
    port = free_port()
    context = mp.get_context("spawn")
    processes = [
        context.Process(
            target=_one_step_on_a_rank, args=(r, 2, port, compile_mode, outs[r], poison)
        )
        for r in range(2)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
        assert p.exitcode == 0
    return [torch.load(out, weights_only=True) for out in outs]


@pytest.mark.parametrize("compile_mode", ["eager", "jit"])
def test_one_step_on_two_ranks_equals_one_process_on_the_global_batch(tmp_path, compile_mode):
    from pyro_vae.evaluation import fixed_seed

    ranks = _spawn_one_step(tmp_path, compile_mode)

    # The reference: one process, the global batch's loss as the sum of the shards' losses,
    # each with the draws its rank made.
    config = small_config(hidden_dims=[32], latent_dim=4, compile=compile_mode)
    model, guide, loss, mode, optimizer, batch = _prepared(config)
    optimizer.zero_grad()
    total = 0
    for rank, x in enumerate(torch.tensor_split(batch, 2)):
        with fixed_seed(100 + rank, x.device):
            total = total + loss(x)
    total.backward()
    optimizer.step()
    expected = {**model.state_dict(), **{f"guide.{k}": v for k, v in guide.state_dict().items()}}

    assert ranks[0]["mode"] == ranks[1]["mode"] == mode == compile_mode
    assert ranks[0]["taken"] and ranks[1]["taken"]
    for name, value in expected.items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
        torch.testing.assert_close(ranks[0]["params"][name], value, rtol=0, atol=1e-5)
    # The reported loss is the global batch's, the same on both ranks.
    assert ranks[0]["loss"].item() == ranks[1]["loss"].item()
    assert ranks[0]["loss"].item() == pytest.approx(total.item(), rel=1e-5)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_a_non_finite_loss_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    ranks = _spawn_one_step(tmp_path, "eager", poison=True)
    assert not ranks[0]["taken"] and not ranks[1]["taken"]
    assert not torch.isfinite(ranks[0]["loss"]) and not torch.isfinite(ranks[1]["loss"])
    config = small_config(hidden_dims=[32], latent_dim=4, compile="eager")
    model, guide, *_ = _prepared(config)
    initial = {**model.state_dict(), **{f"guide.{k}": v for k, v in guide.state_dict().items()}}
    for rank in ranks:  # no update was made
        assert all(torch.equal(rank["params"][name], v) for name, v in initial.items())


# ---------------------------------------------------------------------------------------------
# Whole runs under torchrun


@pytest.fixture(scope="module")
def single_and_parallel(tmp_path_factory):
    """The same 2-epoch digits run in one process and in two."""
    root = tmp_path_factory.mktemp("dist")
    single = subprocess.run(
        [sys.executable, "-m", "pyro_vae", "train", *TRAIN_FLAGS, "--epochs", "2", "--quiet",
         "--out", str(root / "single")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    out, err = finished(
        torchrun("train", *TRAIN_FLAGS, "--epochs", "2", "--out", str(root / "parallel"))
    )
    return root / "single", root / "parallel", out, err


def test_two_processes_train_one_run_folder_close_to_one_process(single_and_parallel):
    single, parallel, out, err = single_and_parallel
    rows = [json.loads(line) for line in (parallel / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert all(row["valid_elbo"] is not None for row in rows)
    single_rows = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    assert abs(rows[-1]["test_elbo"] - single_rows[-1]["test_elbo"]) < 0.5
    assert rows[-1]["test_elbo"] > rows[0]["test_elbo"] + 5  # it trained
    # Rank 0 alone reports and writes: one summary, one progress bar, no stray files.
    assert out.count("test ELBO:") == 1
    assert err.count("| 0/40 ") == 1
    written = {p.name for p in parallel.iterdir()}
    assert written == {p.name for p in single.iterdir()}
    state = load_checkpoint(parallel / "checkpoint.pt")
    assert state["world_size"] == 2 and len(state["rank_streams"]) == 2


def test_checkpoints_resume_on_another_number_of_processes(single_and_parallel, tmp_path):
    single, parallel, _, _ = single_and_parallel
    two_to_one = shutil.copytree(parallel, tmp_path / "two-to-one")
    with pytest.warns(UserWarning, match="resuming a 2-process run on 1 process"):
        run = train(run_dir=two_to_one, resume=True, progress=False)
    assert run.history[-1]["epoch"] == 2  # nothing left to do: the streams are still set
    assert main(["train", "--resume", str(two_to_one), "--epochs", "3", "--quiet"]) == 0
    assert load_checkpoint(two_to_one / "checkpoint.pt")["world_size"] == 1

    one_to_two = shutil.copytree(single, tmp_path / "one-to-two")
    _, err = finished(torchrun("train", "--resume", str(one_to_two), "--epochs", "3", "--quiet"))
    assert err.count("resuming a 1-process run on 2 process(es)") == 1
    for run_dir in (two_to_one, one_to_two):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [row["epoch"] for row in rows] == [0, 1, 2, 3]
        assert rows[-1]["test_elbo"] > rows[0]["test_elbo"] + 5
    assert load_checkpoint(one_to_two / "checkpoint.pt")["world_size"] == 2


def test_distributed_evaluation_equals_one_process(single_and_parallel, tmp_path):
    _, parallel, _, _ = single_and_parallel
    flags = ["--num-samples", "100", "--max-images", "50", "--max-elements", "20000", "--quiet"]
    one = shutil.copytree(parallel, tmp_path / "one")
    assert main(["evaluate", str(one), *flags]) == 0
    two = shutil.copytree(parallel, tmp_path / "two")
    out, _ = finished(torchrun("evaluate", str(two), *flags))
    assert out.count("log p(x) ≈") == 1
    # Per image: log p̂(x), ELBO, bounds, k̂ and ESS, to the last printed digit.
    csv = "evaluation_per_datapoint.csv"
    assert (two / csv).read_text() == (one / csv).read_text()
    assert len((two / csv).read_text().splitlines()) == 51
    assert json.loads((two / "evaluation.json").read_text()) == json.loads(
        (one / "evaluation.json").read_text()
    )


def test_ranks_stop_early_together_on_rank_0s_validation_elbo(tmp_path):
    flags = [*TRAIN_FLAGS, "--lr", "0.03", "--early-stopping", "2", "--lr-schedule", "plateau"]
    run_dir = tmp_path / "run"
    finished(torchrun("train", *flags, "--epochs", "40", "--quiet", "--out", str(run_dir)))
    state = load_checkpoint(run_dir / "checkpoint.pt")
    history = state["history"]
    assert history[-1]["epoch"] < 40
    assert history[-1]["epoch"] - load_checkpoint(run_dir / "best.pt")["epoch"] == 2
    assert state["scheduler"]["last_epoch"] == history[-1]["epoch"]


def _worker_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    for child in Path("/proc").glob("[0-9]*"):
        try:
            stat = (child / "stat").read_text()
            environ = (child / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == launcher.pid and f"RANK={rank}".encode() in environ:
            return int(child.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_a_killed_worker_restarts_the_group_which_resumes_and_finishes(tmp_path):
    run_dir = tmp_path / "run"
    flags = ["--hidden-dims", "64", "--latent-dim", "4", "--batch-size", "16", "--device", "cpu"]
    flags += ["--epochs", "12", "--quiet"]
    finished(torchrun("train", *flags, "--out", str(tmp_path / "uninterrupted")))
    launcher = torchrun("train", *flags, "--out", str(run_dir), restarts=1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and launcher.poll() is None:
        try:
            if load_checkpoint(run_dir / "checkpoint.pt")["epoch"] >= 2:
                break
        except UserInputError:
            pass  # not written yet
        time.sleep(0.02)
    worker = _worker_pid(launcher, rank=1)
    assert worker is not None, launcher.communicate()
    os.kill(worker, signal.SIGKILL)  # mid-epoch: an epoch takes ~0.3 s, checks every 20 ms
    out, err = finished(launcher)
    assert "exitcode: -9" in err  # torchrun saw the kill, restarted, and the group finished
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["epoch"] == 12 and state["position"]["step"] == 0
    assert [row["epoch"] for row in state["history"]] == list(range(13))
    assert out.count("test ELBO:") == 1
    # Every rank's streams were in the checkpoint: the run is the one left alone, bit for bit.
    alone = load_checkpoint(tmp_path / "uninterrupted" / "checkpoint.pt")
    for part in ("model", "guide"):
        assert all(torch.equal(state[part][k], v) for k, v in alone[part].items())


# ---------------------------------------------------------------------------------------------
# Bad input


def test_a_global_batch_smaller_than_the_processes_is_refused(tmp_path):
    launcher = torchrun("train", *TRAIN_FLAGS[:-4], "--batch-size", "1", "--device", "cpu",
                        "--epochs", "1", "--out", str(tmp_path / "run"))  # fmt: skip
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    line = "pyro-vae: error: --batch-size 1 is the global batch, shared by 2 processes"
    assert err.count(line) == 1  # one line, from the first process of the machine
    assert "[rank0]: Traceback" not in err and "[rank1]: Traceback" not in err
    assert "exitcode: 2" in err.replace("  ", " ")
    assert not (tmp_path / "run").exists()


def test_cuda_with_fewer_gpus_than_processes_is_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    out = tmp_path / "run"
    assert main(["train", "--device", "cuda", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "torchrun started 2 processes on this machine but only 1 GPU(s)" in err
    assert not out.exists()


def test_the_last_batch_of_an_epoch_must_reach_every_process():
    group = ProcessGroup(rank=1, world_size=4)
    group.check_shards(64, 1257)  # 41 images in the last batch
    with pytest.raises(UserInputError, match="last batch holds 3 of the 1219 training images"):
        group.check_shards(64, 1219)
    shards = [ProcessGroup(r, 3).shard(torch.arange(10)) for r in range(3)]
    assert [s.tolist() for s in shards] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_one_process_checkpoints_no_rank_streams(trained_run):
    state = load_checkpoint(trained_run.run_dir / "checkpoint.pt")
    assert state["world_size"] == 1 and "rank_streams" not in state


def test_m2_trains_under_torchrun_like_one_process(tmp_path):
    """m2's labelled batch is drawn alike on every rank (the permutation stream) and shared
    out with the unlabelled one: two processes train what one does, up to random streams."""
    flags = [*TRAIN_FLAGS, "--model", "m2", "--labels", "41", "--epochs", "3", "--quiet"]
    single = subprocess.run(
        [sys.executable, "-m", "pyro_vae", "train", *flags, "--out", str(tmp_path / "single")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    out, _ = finished(torchrun("train", *flags, "--out", str(tmp_path / "parallel")))
    assert out.count("test error of argmax q(y|x)") == 1

    def last(run: str) -> dict:
        return json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[-1])

    one, two = last("single"), last("parallel")
    assert abs(one["test_elbo"] - two["test_elbo"]) < 1.0
    assert two["test_error"] < 0.8 and abs(one["test_error"] - two["test_error"]) < 0.15
    assert (tmp_path / "parallel" / "labelled.json").read_text() == (
        tmp_path / "single" / "labelled.json"
    ).read_text()
