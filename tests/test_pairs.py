"""train_pair: a user's own Pyro model/guide trained with the toolkit's loop (issue 16)."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.constraints import positive

from pyro_vae import (
    TrainConfig,
    importance_log_likelihood,
    load_pair,
    load_run,
    train,
    train_pair,
)
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.errors import UserInputError
from pyro_vae.pairs import PyroProgram, program_parameters
from tests.conftest import small_config
from tests.linear_gaussian import LATENT, PIXELS, LinearGaussian
from tests.user_pairs import (
    PyroDecoder,
    PyroEncoder,
    TutorialVAE,
    functional_guide,
    functional_model,
)

QUIET = {"progress": False}


@pytest.fixture(scope="module")
def digits():
    from pyro_vae.data import load_data

    data = load_data("digits", "none")
    return data.train.float() / 255, data.test.float() / 255


def vectors(n: int = 300) -> torch.Tensor:
    return LinearGaussian().sample(n).reshape(n, PIXELS)


def test_the_tutorial_vae_trains_jit_traced_and_its_estimate_follows(digits, tmp_path):
    train_images, test_images = digits
    torch.manual_seed(0)
    vae = TutorialVAE()
    config = TrainConfig(epochs=4, batch_size=128, valid_size=137, binarize="dynamic", lr=3e-3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train_pair(
            vae.model, vae.guide, train_images, config, tmp_path, test_images=test_images, **QUIET
        )
    messages = [str(w.message) for w in caught]
    assert not any("--compile jit" in m for m in messages)  # the trace held
    assert any("samples.png and reconstructions.png skipped" in m for m in messages)
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [0, 1, 2, 3, 4]
    assert {row["compile"] for row in history} == {"jit"}
    valid = [row["valid_elbo"] for row in history]
    assert valid[-1] > valid[0] + 10  # nats per image: it learned
    assert (tmp_path / "curves.png").is_file() and not (tmp_path / "samples.png").exists()
    stored = json.loads((tmp_path / "config.json").read_text())
    assert (stored["model"], stored["dataset"], stored["valid_size"]) == (
        "user-pair",
        "tensor",
        137,
    )
    # The checkpoint holds the parameters under their Pyro names.
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["model"]["_extra_state"] == [
        f"decoder$$${name}" for name, _ in vae.decoder.named_parameters()
    ]
    assert state["guide"]["_extra_state"][0] == "encoder$$$fc1.weight"
    # The trained modules are the user's own: the estimate reads the same weights.
    torch.testing.assert_close(state["guide"]["values.0"], vae.encoder.fc1.weight.detach())
    x = torch.bernoulli(test_images[:20], generator=torch.Generator().manual_seed(0))
    estimate = importance_log_likelihood(vae.model, vae.guide, x, num_samples=200)
    assert estimate.summary["log_likelihood"] >= estimate.summary["elbo"]
    assert run.test_elbo == history[-1]["test_elbo"]


@pytest.mark.parametrize(
    "make_pair, plate",
    [
        (lambda: (functional_model, functional_guide), "batch"),
        (lambda: (PyroDecoder(), PyroEncoder()), "data"),
    ],
    ids=["pyro-params", "pyro-modules"],
)
def test_functional_and_pyro_module_pairs_train_and_resume_bit_identically(
    make_pair, plate, tmp_path
):
    x = vectors()
    config = TrainConfig(epochs=4, batch_size=64, valid_size=60, lr=1e-2, checkpoint_every=2)

    def fresh_pair():
        pyro.clear_param_store()  # as in a new process
        torch.manual_seed(1)
        return make_pair()

    straight = train_pair(
        *fresh_pair(), x, config, tmp_path / "straight", data_plate=plate, **QUIET
    )
    config.epochs = 2
    train_pair(*fresh_pair(), x, config, tmp_path / "resumed", data_plate=plate, **QUIET)
    config.epochs = 4
    resumed = train_pair(
        *fresh_pair(), x, config, tmp_path / "resumed", data_plate=plate, resume=True, **QUIET
    )
    assert straight.history[-1]["epoch"] == resumed.history[-1]["epoch"] == 4
    assert straight.history[-1]["valid_elbo"] > straight.history[0]["valid_elbo"]
    for program in ("model", "guide"):
        ours = getattr(straight, program).state_dict()
        theirs = getattr(resumed, program).state_dict()
        assert ours["_extra_state"] == theirs["_extra_state"]
        for name in ours:
            if name != "_extra_state":
                assert torch.equal(ours[name], theirs[name]), (program, name)
    assert [r["valid_elbo"] for r in straight.history] == [r["valid_elbo"] for r in resumed.history]


def test_pyro_params_under_constraints_are_trained_unconstrained():
    x = vectors(10)
    model_params, guide_params = program_parameters(functional_model, functional_guide, x)
    assert sorted(model_params) == ["bias", "weight"]
    assert sorted(guide_params) == ["guide_scale", "guide_weight"]
    # The store now holds the very Parameters the trainer optimizes: the scale's log.
    assert isinstance(guide_params["guide_scale"], torch.nn.Parameter)
    assert pyro.param("guide_scale").unconstrained() is guide_params["guide_scale"]
    torch.testing.assert_close(guide_params["guide_scale"].detach(), torch.zeros(3))


def test_a_checkpoint_refuses_a_pair_of_other_names_or_shapes(tmp_path):
    config = TrainConfig(epochs=1, batch_size=50)
    train_pair(
        functional_model, functional_guide, vectors(), config, tmp_path, data_plate="batch", **QUIET
    )
    pyro.clear_param_store()

    def wider_guide(x):
        weight = pyro.param("guide_weight", torch.zeros(LATENT, PIXELS))
        scale = pyro.param("guide_scale", torch.ones(LATENT + 1), constraint=positive)
        with pyro.plate("batch", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ weight.T, scale[:LATENT]).to_event(1))

    with pytest.raises(
        UserInputError, match=r"guide_scale: shape \(3,\) in the checkpoint, \(4,\)"
    ):
        train_pair(
            functional_model,
            wider_guide,
            vectors(),
            config,
            tmp_path,
            data_plate="batch",
            resume=True,
        )
    pyro.clear_param_store()
    model, guide = PyroDecoder(), PyroEncoder()
    with pytest.raises(UserInputError, match="do not fit this pair .*missing from the pair"):
        train_pair(model, guide, vectors(), config, tmp_path, resume=True, **QUIET)


def test_a_user_pair_run_folder_says_how_it_is_loaded(tmp_path, trained_run):
    train_pair(PyroDecoder(), PyroEncoder(), vectors(), TrainConfig(epochs=1), tmp_path, **QUIET)
    with pytest.raises(UserInputError, match="pair trained without a builder.*load_pair"):
        load_run(tmp_path)
    with pytest.raises(UserInputError, match="holds a registry run"):
        train_pair(PyroDecoder(), PyroEncoder(), vectors(), None, trained_run.run_dir, resume=True)


@pytest.mark.parametrize(
    "changes, images, message",
    [
        ({"precision": "bf16"}, None, "precision 'bf16' applies to the registry's networks"),
        ({"weight_init": "he-normal"}, None, "weight_init 'he-normal' applies to the registry"),
        ({"output_bias": "data-logit"}, None, "output_bias 'data-logit' applies to the regis"),
        ({"binarize": "static"}, None, "binarize 'static' is not offered"),
        ({"binarize": "dynamic"}, "grey", "needs values in \\[0, 1\\]"),
        ({"valid_size": 300}, None, "valid_size 300 leaves none of the 300 images"),
        ({"early_stopping": 3}, None, "early_stopping: 3 chooses by the validation ELBO"),
        ({}, "nan", "images hold NaN"),
        ({}, "flat", "images must be a non-empty \\(N, ...\\) tensor"),
    ],
)
def test_bad_training_input_is_one_clear_error(changes, images, message, tmp_path):
    x = {"grey": vectors() * 3, "nan": vectors().fill_(float("nan")), "flat": torch.ones(5)}.get(
        images, vectors()
    )
    with pytest.raises(UserInputError, match=message):
        train_pair(PyroDecoder(), PyroEncoder(), x, TrainConfig(**changes), tmp_path, **QUIET)
    assert not (tmp_path / "config.json").exists()  # refused before anything was written


def test_a_pair_without_parameters_is_refused(tmp_path):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x, 1.0).to_event(1))

    with pytest.raises(UserInputError, match="no parameters to train"):
        train_pair(model, guide, torch.randn(20, 1), None, tmp_path)


def test_kl_warmup_and_the_iwae_objective_apply_to_a_user_pair(tmp_path):
    config = TrainConfig(epochs=2, batch_size=50, elbo="iwae", num_particles=5, kl_warmup_epochs=4)
    run = train_pair(PyroDecoder(), PyroEncoder(), vectors(), config, tmp_path, **QUIET)
    assert [row["kl_weight"] for row in run.history] == [None, 0.25, 0.5]
    assert all(row["compile"] == "jit" for row in run.history)


def test_registry_runs_still_write_their_images(tmp_path):
    train(small_config(epochs=1), run_dir=tmp_path, progress=False)
    assert {"samples.png", "reconstructions.png", "curves.png"} <= {
        p.name for p in tmp_path.iterdir()
    }


def test_pyro_program_modes_reach_the_users_module():
    vae = TutorialVAE()
    program = PyroProgram(vae.guide, [], [])
    program.eval()
    assert not vae.training and not vae.encoder.fc1.training
    program.train()
    assert vae.training and vae.encoder.fc1.training


def test_a_user_pair_trains_under_torchrun_like_one_process(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    for processes in (1, 2):
        command = [*launcher, f"--nproc-per-node={processes}", "-m", "tests.user_pairs"]
        done = subprocess.run(
            [*command, str(tmp_path / str(processes))], cwd=root, env=env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    rows = {
        n: [json.loads(line) for line in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]
        for n in ("1", "2")
    }
    assert [row["epoch"] for row in rows["2"]] == [0, 1, 2]
    # Epoch 0 is the same untrained pair on both; after it, the same steps on other draws.
    assert rows["2"][0]["test_elbo"] == rows["1"][0]["test_elbo"]
    assert abs(rows["2"][-1]["test_elbo"] - rows["1"][-1]["test_elbo"]) < 1.0
    assert rows["2"][-1]["test_elbo"] > rows["2"][0]["test_elbo"] + 5
    state = load_checkpoint(tmp_path / "2" / "checkpoint.pt")
    assert state["world_size"] == 2 and state["model"]["_extra_state"][0] == "decoder$$$fc3.weight"


def test_the_docs_example_of_a_users_own_pair_runs(tmp_path, monkeypatch, capsys):
    page = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    section = page.split("## Your own Pyro model and guide", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/extending.md", "exec"), {"__name__": "docs"})
    log_likelihood, share = map(float, capsys.readouterr().out.split()[-2:])
    assert -40 < log_likelihood < -20 and share < 0.1  # nats per 8x8 digit, reliable weights
    assert (tmp_path / "runs" / "my-vae" / "checkpoint.pt").is_file()


def test_the_pair_checker_names_shapes_dtype_and_a_forgotten_pyro_module(digits, tmp_path):
    vae = TutorialVAE()
    train_images = digits[0]
    images = train_images[:64]

    # un-flattened images observed under a to_event(1) of 64 pixels
    def unflattened_model(x):
        pyro.module("decoder", vae.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], 8), 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=vae.decoder(z)).to_event(1), obs=x)

    with pytest.raises(UserInputError, match=r"site 'obs'.*does not fit its distribution's shape"):
        importance_log_likelihood(unflattened_model, vae.guide, images, num_samples=4)
    with pytest.raises(UserInputError, match=r"the images are torch.uint8, not floats"):
        importance_log_likelihood(vae.model, vae.guide, (images * 255).byte(), num_samples=4)
    assert images.is_floating_point()

    class Forgetful(TutorialVAE):
        def guide(self, x):  # no pyro.module("encoder", ...): the encoder would train frozen
            with pyro.plate("data", x.shape[0]):
                z_loc, z_scale = self.encoder(x)
                pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    pyro.clear_param_store()  # the pairs above registered a decoder of the same names
    forgetful = Forgetful()
    with pytest.raises(UserInputError, match=r"guide's module Forgetful has parameters Pyro"):
        train_pair(forgetful.model, forgetful.guide, train_images,
                   TrainConfig(epochs=1), tmp_path, **QUIET)  # fmt: skip


BUILDER = "tests.user_pairs:build_tutorial_vae"


@pytest.fixture(scope="module")
def built_run(digits, tmp_path_factory):
    """The tutorial VAE trained with a builder: a whole run pyro-vae can rebuild."""
    train_images, test_images = digits
    run_dir = tmp_path_factory.mktemp("built") / "run"
    pyro.clear_param_store()
    torch.manual_seed(0)
    parts = __import__("tests.user_pairs", fromlist=["x"]).build_tutorial_vae()
    config = TrainConfig(epochs=2, batch_size=128, valid_size=137, binarize="dynamic", lr=3e-3)
    train_pair(parts.model, parts.guide, train_images, config, run_dir,
               test_images=test_images, builder=BUILDER, **QUIET)  # fmt: skip
    return run_dir, parts


def test_load_pair_gives_back_the_trained_pair_without_its_images(built_run):
    run_dir, trained = built_run
    x = torch.bernoulli(torch.full((6, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(1))
    expected = importance_log_likelihood(trained.model, trained.guide, x, num_samples=50)
    fresh = TutorialVAE()  # other weights, and Pyro's param store still holds the trained ones
    model, guide = load_pair(run_dir, fresh.model, fresh.guide)
    for ours, theirs in zip(fresh.parameters(), trained.model.__self__.parameters()):
        torch.testing.assert_close(ours, theirs)
    assert not fresh.training
    again = importance_log_likelihood(model, guide, x, num_samples=50)
    np.testing.assert_allclose(again.log_likelihood, expected.log_likelihood, rtol=0, atol=1e-5)
    with pytest.raises(UserInputError, match="does not run on images of the run's shape"):
        load_pair(run_dir, PyroDecoder(), PyroEncoder())
    other = TutorialVAE()
    other.decoder.fc4 = torch.nn.Linear(64, 64, bias=False)
    with pytest.raises(UserInputError, match="decoder\\$\\$\\$fc4.bias missing from the pair"):
        load_pair(run_dir, other.model, other.guide)


def test_a_run_with_a_builder_is_evaluated_sampled_and_drawn_by_the_cli(built_run, capsys):
    from pyro_vae.cli import main

    run_dir, trained = built_run
    stored = torch.load(run_dir / "test_images.pt", weights_only=True)["test"]
    assert stored.dtype == torch.bool and stored.shape == (360, 1, 8, 8)  # binarized once
    run = load_run(run_dir)
    torch.testing.assert_close(run.data.inputs("test"), stored.float())
    assert main(["evaluate", str(run_dir), "--num-samples", "40", "--max-images", "12",
                 "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    summary = json.loads((run_dir / "evaluation.json").read_text())
    direct = importance_log_likelihood(trained.model, trained.guide, stored[:12].float(), 40)
    assert summary["num_images"] == 12 and "test ELBO" in out
    assert summary["log_likelihood"] == pytest.approx(direct.summary["log_likelihood"], abs=1e-4)
    assert main(["sample", str(run_dir), "--num", "9", "--out", str(run_dir / "s.png")]) == 0
    assert (run_dir / "s.png").is_file()
    assert main(["viz", str(run_dir)]) == 0
    assert {p.name for p in (run_dir / "viz").iterdir()} >= {"samples.png", "reconstructions.png"}
    assert main(["evaluate", str(run_dir), "--method", "ais", "--steps", "3", "--chains", "2",
                 "--leapfrog-steps", "2", "--max-images", "4", "--quiet"]) == 0  # fmt: skip


def test_a_builder_is_checked_when_training_and_when_loading(digits, tmp_path, built_run):
    from pyro_vae.cli import main

    train_images, _ = digits
    vae = TutorialVAE()
    config = TrainConfig(epochs=1, batch_size=128, binarize="dynamic")
    for builder, message in (("nocolon", "is not 'module:function'"),
                             ("no_such_module:f", "needs the plug-in module 'no_such_module'"),
                             ("tests.user_pairs:nothing", "has no function nothing")):  # fmt: skip
        with pytest.raises(UserInputError, match=message):
            train_pair(vae.model, vae.guide, train_images[:200], config, tmp_path / builder,
                       builder=builder, **QUIET)  # fmt: skip
    run_dir, _ = built_run
    (run_dir / "test_images.pt").rename(run_dir / "kept.pt")
    try:
        (run_dir / "test_images.pt").write_bytes(b"not a tensor file")
        assert main(["evaluate", str(run_dir), "--elbo-only"]) == 2
    finally:
        (run_dir / "kept.pt").replace(run_dir / "test_images.pt")


def test_a_second_pair_of_the_same_names_is_told_to_clear_the_param_store(tmp_path):
    images = torch.rand(50, 1, 8, 8)
    config = TrainConfig(epochs=1, batch_size=25, binarize="dynamic")
    first = TutorialVAE()
    train_pair(first.model, first.guide, images, config, tmp_path / "first", **QUIET)
    vae = TutorialVAE()  # Pyro's param store still holds the first one's "encoder$$$..."
    with pytest.raises(UserInputError, match="already holds '(en|de)coder.*clear_param_store"):
        train_pair(vae.model, vae.guide, images, config, tmp_path, **QUIET)


def test_a_run_whose_builder_has_no_decoder_mean_is_evaluated_but_not_sampled(
    digits, tmp_path, capsys
):
    from pyro_vae.cli import main

    train_images, test_images = digits
    pyro.clear_param_store()
    model, guide = __import__("tests.user_pairs", fromlist=["x"]).build_tutorial_pair()
    config = TrainConfig(epochs=1, batch_size=128, binarize="dynamic")
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match="samples.png and reconstructions.png skipped"):
        train_pair(model, guide, train_images[:300], config, run_dir,
                   test_images=test_images[:40], builder="tests.user_pairs:build_tutorial_pair",
                   **QUIET)  # fmt: skip
    assert not (run_dir / "samples.png").exists() and (run_dir / "curves.png").is_file()
    assert main(["evaluate", str(run_dir), "--num-samples", "8", "--max-images", "5",
                 "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["sample", str(run_dir), "--num", "4"]) == 2
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "has no decoder mean E[x|z] to draw" in said
    assert "PairParts(model, guide, decoder_mean)" in said
    assert not list(run_dir.glob("samples-seed*.png"))
    assert main(["viz", str(run_dir)]) == 0
    assert {p.name for p in (run_dir / "viz").iterdir()} == {"curves.png"}
