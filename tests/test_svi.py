import json

import pytest
import torch

from pyro_vae import TrainConfig, UserInputError, evaluate, load_run, train
from pyro_vae.svi import NonFiniteLossError, nonfinite_report
from tests.conftest import small_config

RUN_FILES = {
    "config.json",
    "checkpoint.pt",
    "metrics.jsonl",
    "samples.png",
    "reconstructions.png",
    "curves.png",
}


def test_two_epochs_on_digits_improve_the_test_elbo_markedly(tmp_path):
    run = train(small_config(epochs=2), run_dir=tmp_path / "run", progress=False)
    untrained, trained = run.history[0]["test_elbo"], run.history[-1]["test_elbo"]
    # An untrained decoder scores ~44 nats of coin flips per 8x8 image; two epochs learn the
    # pixel marginals at least.
    assert untrained < -40
    assert trained > untrained + 10


def test_run_folder_holds_every_file_and_one_metrics_row_per_epoch(trained_run):
    assert RUN_FILES <= {p.name for p in trained_run.run_dir.iterdir()}
    rows = [json.loads(line) for line in (trained_run.run_dir / "metrics.jsonl").open()]
    assert [row["epoch"] for row in rows] == [0, 1, 2, 3]
    for row in rows[1:]:
        assert row["train_elbo"] < 0 and row["valid_elbo"] < 0 and row["test_elbo"] < 0
        assert row["seconds"] > 0
    saved = json.loads((trained_run.run_dir / "config.json").read_text())
    assert TrainConfig.from_dict(saved) == trained_run.config


def test_reloaded_run_gives_the_same_test_elbo(trained_run):
    reloaded = load_run(trained_run.run_dir)
    assert evaluate(reloaded) == trained_run.test_elbo
    for name, value in trained_run.model.state_dict().items():
        assert torch.equal(reloaded.model.state_dict()[name], value)


def test_evaluation_is_deterministic_and_leaves_the_rng_alone(trained_run):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = evaluate(trained_run, "valid")
    assert torch.equal(torch.rand(3), expected_next)
    assert evaluate(trained_run, "valid") == first


def test_same_seed_same_run(tmp_path):
    a = train(small_config(epochs=1), run_dir=tmp_path / "a", progress=False)
    b = train(small_config(epochs=1), run_dir=tmp_path / "b", progress=False)
    c = train(small_config(epochs=1, seed=1), run_dir=tmp_path / "c", progress=False)
    assert a.history[-1]["train_elbo"] == b.history[-1]["train_elbo"]
    assert a.history[-1]["train_elbo"] != c.history[-1]["train_elbo"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"elbo": "meanfield"},
        {"num_particles": 3},
        {"clip_norm": 5.0},
        {"binarize": "threshold"},
        {"hidden_dims": [32, 16], "activation": "relu"},
    ],
)
def test_options_train(tmp_path, overrides):
    run = train(small_config(epochs=2, **overrides), run_dir=tmp_path / "run", progress=False)
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"] + 5


def test_epochs_zero_writes_an_untrained_run(tmp_path):
    run = train(small_config(epochs=0), run_dir=tmp_path / "run", progress=False)
    assert [row["epoch"] for row in run.history] == [0]
    assert evaluate(load_run(tmp_path / "run")) == run.test_elbo


def test_existing_run_is_never_overwritten(trained_run):
    before = (trained_run.run_dir / "checkpoint.pt").read_bytes()
    with pytest.raises(UserInputError, match="already holds a run"):
        train(small_config(), run_dir=trained_run.run_dir, progress=False)
    assert (trained_run.run_dir / "checkpoint.pt").read_bytes() == before


def test_batch_larger_than_the_training_set(tmp_path):
    with pytest.raises(UserInputError, match="larger than the 1257 training images"):
        train(small_config(batch_size=5000), run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_grey_data_under_a_bernoulli_likelihood_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="choose --binarize dynamic, static or threshold"):
        train(small_config(binarize="none"), run_dir=tmp_path / "run", progress=False)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path):
    # A learning rate this large drives the softplus network to inf/NaN within an epoch.
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite loss or gradient at epoch 1, step \d+"
    ):
        train(small_config(epochs=3, lr=1e30), run_dir=tmp_path / "run", progress=False)
    reloaded = load_run(tmp_path / "run")  # the checkpoint left behind still loads
    assert all(torch.isfinite(p).all() for p in reloaded.model.parameters())


def test_nonfinite_report_names_the_site(trained_run):
    x = next(trained_run.data.eval_batches("test", 16))
    decoder_bias = trained_run.model.decoder.net[-1].bias
    saved = decoder_bias.detach().clone()
    with torch.no_grad():
        decoder_bias[3] = float("nan")
    try:
        report = nonfinite_report(trained_run.model, trained_run.guide, x)
    finally:
        with torch.no_grad():
            decoder_bias.copy_(saved)
    assert (
        report
        == "log-probability of model site 'x'; parameters model.decoder.net.2.bias not finite"
    )


def test_training_step_matches_pyro_svi_loss_and_gradients():
    """The loop's loss module (Pyro's ELBO()(model, guide) with a torch optimizer) and plain
    Pyro SVI's Trace_ELBO.loss_and_grads agree on loss and gradients for one seed and batch."""
    import pyro

    from pyro_vae import build_vae, make_elbo
    from pyro_vae.data import load_data

    config = small_config()
    data = load_data("digits", "static")
    model, guide = build_vae(config, data.image_shape)
    x = next(data.eval_batches("train", 64))
    params = list(model.parameters()) + list(guide.parameters())

    pyro.set_rng_seed(7)
    ours = make_elbo(config)(model, guide)(x)
    ours.backward()
    our_grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None

    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    theirs = pyro.infer.Trace_ELBO().loss_and_grads(model, guide, x)
    assert ours.item() == pytest.approx(theirs, rel=1e-6)
    for ours_grad, p in zip(our_grads, params):
        torch.testing.assert_close(ours_grad, p.grad, rtol=1e-5, atol=1e-6)


def test_all_finite_finds_a_single_bad_element_and_leaves_gradients_as_they_were():
    from pyro_vae.svi import all_finite

    grads = [torch.randn(5, 3), torch.randn(7)]
    before = [g.clone() for g in grads]
    assert all_finite(torch.tensor(2.0), grads)
    assert all(torch.equal(a, b) for a, b in zip(grads, before))
    assert not all_finite(torch.tensor(float("inf")), grads)
    for bad in (float("nan"), float("inf"), -float("inf")):
        grads[1][4] = bad
        assert not all_finite(torch.tensor(2.0), grads)


def test_the_optimizer_is_one_fused_adam_where_torch_has_one():
    from pyro_vae.svi import adam

    optimizer = adam([torch.nn.Parameter(torch.zeros(3))], 1e-3)
    assert optimizer.defaults["fused"] is True
    assert optimizer.defaults["eps"] == 1e-8  # torch's own default


def test_adam_eps_and_beta1_reach_the_optimizer_and_its_checkpoint(tmp_path):
    """--adam-eps is Adam's ε, --adam-beta1 its β1: the run's optimizer has them, and its
    checkpoint keeps them."""
    config = small_config(epochs=1, adam_eps=1e-4, adam_beta1=0.99)
    train(config, run_dir=tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    assert {(group["eps"], tuple(group["betas"])) for group in groups} == {(1e-4, (0.99, 0.999))}


def test_adam_normgrad_is_adam_on_each_tensors_unit_gradient():
    """AdamNormGrad's steps are torch's Adam's on g / (‖g‖₂ + 1e-7), tensor by tensor; so
    scaling one tensor's gradient by a different factor at each step changes nothing."""
    from pyro_vae.svi import adam

    torch.manual_seed(0)
    start = [torch.randn(4, 3), torch.randn(7)]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    reference = [torch.nn.Parameter(t.clone()) for t in start]
    normgrad = adam(ours, 1e-2, variant="adam-normgrad")
    plain = torch.optim.Adam(reference, lr=1e-2, fused=True)
    for step in range(5):
        grads = [torch.randn(4, 3), torch.randn(7)]
        for p, g, scale in zip(ours, grads, (10.0**step, 10.0**-step)):
            p.grad = g * scale
        for p, g in zip(reference, grads):
            p.grad = g / (torch.linalg.vector_norm(g) + 1e-7)
        normgrad.step()
        plain.step()
        for a, b in zip(ours, reference):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # rounding of g·scale
    assert normgrad.defaults["fused"] is True


def test_adam_normgrad_runs_resume_bit_for_bit_and_differ_from_adam(tmp_path):
    """--optimizer reaches training: a run with adam-normgrad, stopped and resumed, is
    the uninterrupted one to the bit (the resumed run rebuilds the same optimizer), and it
    is not the plain Adam run."""
    straight = train(small_config(optimizer="adam-normgrad"), tmp_path / "a", progress=False)
    train(small_config(epochs=1, optimizer="adam-normgrad"), tmp_path / "b", progress=False)
    extended = small_config(epochs=2, optimizer="adam-normgrad")
    resumed = train(extended, tmp_path / "b", progress=False, resume=True)
    assert resumed.config.optimizer == "adam-normgrad"
    for name, value in straight.guide.state_dict().items():
        assert torch.equal(value, resumed.guide.state_dict()[name]), name
    adam_run = train(small_config(), tmp_path / "c", progress=False)
    assert straight.history[-1]["test_elbo"] != adam_run.history[-1]["test_elbo"]


def defer_on_the_cpu(monkeypatch):
    """Check finiteness the GPU's way (flags read in windows, bad updates skipped by the
    fused optimizer on the device) here on the CPU."""
    monkeypatch.setattr("pyro_vae.svi.DEFER_CHECK_DEVICES", ("cuda", "cpu"))


def test_a_deferred_step_skips_a_bad_update_on_the_device():
    from pyro_vae.svi import adam, svi_step_deferred

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = adam([weight], 0.1)
    scale = torch.tensor(1.0)
    loss_fn = lambda x: (weight * x * scale).sum()  # noqa: E731
    loss, found = svi_step_deferred(loss_fn, optimizer, torch.ones(3))
    assert found.item() == 0 and not torch.equal(weight.detach(), torch.ones(3))
    before = weight.detach().clone()
    moments = {k: v.clone() for k, v in optimizer.state[weight].items()}
    scale.fill_(float("inf"))
    loss, found = svi_step_deferred(loss_fn, optimizer, torch.ones(3))
    assert found.item() > 0 and not hasattr(optimizer, "found_inf")
    assert torch.equal(weight.detach(), before)
    assert all(torch.equal(optimizer.state[weight][k], v) for k, v in moments.items())


def test_a_deferred_check_trains_exactly_as_a_per_step_one(tmp_path, monkeypatch):
    checked = train(small_config(), run_dir=tmp_path / "checked", progress=False)
    defer_on_the_cpu(monkeypatch)
    deferred = train(small_config(), run_dir=tmp_path / "deferred", progress=False)
    for part in ("model", "guide"):
        ours, theirs = getattr(deferred, part).state_dict(), getattr(checked, part).state_dict()
        assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    assert [r["test_elbo"] for r in deferred.history] == [r["test_elbo"] for r in checked.history]


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_a_deferred_check_skips_then_stops_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    defer_on_the_cpu(monkeypatch)
    with pytest.warns(UserWarning, match="skipped a non-finite step at epoch 1, step"):
        with pytest.raises(NonFiniteLossError, match=r"non-finite loss or gradient at epoch 1"):
            train(small_config(lr=1e30, skip_nonfinite=2), run_dir=tmp_path / "r", progress=False)
    reloaded = load_run(tmp_path / "r")
    assert all(torch.isfinite(p).all() for p in reloaded.model.parameters())
