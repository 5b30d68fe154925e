"""The JIT-traced training loss equals Pyro's eager ELBO, and falls back to it, saying why."""

import warnings

import pyro
import pytest
import torch
from pyro_vae.guides.diag_normal import DiagNormalGuide
from torch import nn

from pyro_vae import train
from pyro_vae.compiled import JitTracedLoss, training_loss
from pyro_vae.data import load_data
from pyro_vae.evaluation import fixed_seed
from pyro_vae.registry import build_vae, make_elbo
from tests.conftest import small_config


def pair(**overrides):
    config = small_config(**overrides)
    data = load_data("digits", "static")
    model, guide = build_vae(config, data.image_shape)
    named = list(nn.ModuleDict({"model": model, "guide": guide}).named_parameters())
    return config, model, guide, named, next(data.eval_batches("train", 64))


def loss_and_grads(loss_fn, named, x, seed=3):
    with fixed_seed(seed, x.device):
        loss = loss_fn(x)
        grads = torch.autograd.grad(loss, [p for _, p in named])
    return loss.detach(), grads


def quietly(function, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning where none is due
        return function(*args)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"elbo": "meanfield"},
        {"guide": "iaf", "flow_depth": 2, "flow_hidden_dims": [16]},
        {"prior": "vamp", "prior_components": 3},
        {"model": "hvae", "top_latent_dim": 4},
        {"model": "hvae-skip", "top_latent_dim": 4, "prior": "vamp", "prior_components": 3},
        {"num_particles": 3},
        {"elbo": "iwae", "num_particles": 4},
        {"elbo": "stl", "num_particles": 2},
        # DReG's gradient scaling reads weights computed after the draw: every replay must
        # use its own weights, not those the trace saw (two fresh draws below)
        {"elbo": "iwae-dreg", "num_particles": 4},
        {"elbo": "iwae-dreg", "num_particles": 3, "model": "hvae", "top_latent_dim": 4},
        {"elbo": "iwae-dreg", "num_particles": 3, "prior": "vamp", "prior_components": 3},
    ],
    ids=[
        "trace",
        "meanfield",
        "iaf",
        "vamp",
        "hvae",
        "hvae-skip-vamp",
        "particles",
        "iwae",
        "stl",
        "dreg",
        "dreg-hvae",
        "dreg-vamp",
    ],
)
def test_traced_loss_and_gradients_equal_the_eager_elbo(overrides):
    config, model, guide, named, x = pair(**overrides)
    traced, mode = quietly(training_loss, make_elbo(config), model, guide, x, named, "jit")
    assert mode == "jit" and isinstance(traced, JitTracedLoss)
    eager = make_elbo(config)(model, guide)
    for seed in (3, 4):  # two fresh draws, neither the tracing nor the checking one
        ours, our_grads = loss_and_grads(traced, named, x, seed)
        theirs, their_grads = loss_and_grads(eager, named, x, seed)
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
        for (name, _), a, b in zip(named, our_grads, their_grads):
            # float32 rounding of a gradient scales with the largest terms summed into it:
            # the JIT differentiates the mixture prior's float64 expansion in its own graph,
            # ~1e-7 of the gradient's scale apart from eager autograd.
            scale = max(1.0, b.abs().max().item())
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * scale, msg=name)


def test_pyro_jit_elbo_gradients_are_doubled_and_ours_are_not():
    """Pyro 1.9's JitTrace_ELBO.differentiable_loss doubles every gradient (the reason
    JitTracedLoss builds the loss from loss_and_surrogate_loss); if Pyro fixes it, the
    first assertion fails and the workaround can go."""
    config, model, guide, named, x = pair()
    weight = model.decoder.net[0].weight
    pyro_jit = pyro.infer.JitTrace_ELBO(ignore_jit_warnings=True, max_plate_nesting=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyro_jit(model, guide)(x)  # trace
    (doubled,) = loss_and_grads(pyro_jit(model, guide), [("w", weight)], x)[1]
    (eager,) = loss_and_grads(make_elbo(config)(model, guide), [("w", weight)], x)[1]
    (ours,) = loss_and_grads(JitTracedLoss(make_elbo(config), model, guide), [("w", weight)], x)[1]
    torch.testing.assert_close(doubled, 2 * eager)
    torch.testing.assert_close(ours, eager, rtol=1e-5, atol=1e-6)


def test_each_batch_shape_and_constant_gets_its_own_trace():
    config, model, guide, named, x = pair()
    beta = [1.0]
    traced = JitTracedLoss(make_elbo(config), model, guide, constants=lambda: tuple(beta))
    eager = make_elbo(config)(model, guide)
    for batch in (x, x[:5], x):  # pyro.ops.jit alone would replay the 64-image trace on 5
        assert loss_and_grads(traced, named, batch)[0] == pytest.approx(
            loss_and_grads(eager, named, batch)[0].item(), rel=1e-6
        )
    beta[0] = 0.5
    traced(x)
    assert len(traced.traced) == 3


def test_tracing_leaves_the_random_stream_as_it_found_it():
    """A step that makes a trace draws the same numbers as one that replays it, so a
    resumed run (which traces at other steps) repeats an uninterrupted one."""
    config, model, guide, named, x = pair()
    traced = JitTracedLoss(make_elbo(config), model, guide)
    eager = make_elbo(config)(model, guide)
    with fixed_seed(5, x.device):
        tracing_step = traced(x).item()
        after_tracing = torch.rand(3)
    with fixed_seed(5, x.device):
        eager_step = eager(x).item()
        after_eager = torch.rand(3)
    assert tracing_step == pytest.approx(eager_step, rel=1e-6)
    assert torch.equal(after_tracing, after_eager)


@pytest.mark.parametrize("overrides", [{}, {"elbo": "iwae-dreg", "num_particles": 3}])
def test_jit_training_is_bit_identical_to_eager_training(tmp_path, overrides):
    runs = {
        mode: train(
            small_config(compile=mode, **overrides), run_dir=tmp_path / mode, progress=False
        )
        for mode in ("jit", "eager")
    }
    assert [row["compile"] for row in runs["jit"].history] == ["jit"] * 3
    for part in ("model", "guide"):
        ours = getattr(runs["jit"], part).state_dict()
        theirs = getattr(runs["eager"], part).state_dict()
        assert all(torch.equal(ours[name], theirs[name]) for name in ours), part
    assert runs["jit"].history[-1]["test_elbo"] == runs["eager"].history[-1]["test_elbo"]


class RandomScaleGuide(DiagNormalGuide):
    """A guide that reads a random number into Python: a trace freezes it."""

    def posterior(self, x):
        q = super().posterior(x)
        scale = q.stddev * (1 + torch.rand(()).item())
        return pyro.distributions.Normal(q.mean, scale).to_event(1)


def test_a_trace_that_freezes_a_value_is_refused_with_the_reason():
    config, model, _, _, x = pair()
    guide = RandomScaleGuide(build_vae(config, (1, 8, 8))[1].encoder, config.latent_dim)
    named = list(nn.ModuleDict({"model": model, "guide": guide}).named_parameters())
    with pytest.warns(UserWarning, match=r"--compile jit: the traced loss differs from the eager"):
        loss_fn, mode = training_loss(make_elbo(config), model, guide, x, named, "jit")
    assert mode == "eager" and not isinstance(loss_fn, JitTracedLoss)


class UnknownELBO(pyro.infer.Trace_ELBO):
    """An objective added by a user, of which no JIT form is known."""


def test_objectives_without_a_jit_form_and_untraceable_guides_fall_back():
    config, model, guide, named, x = pair()
    with pytest.warns(UserWarning, match=r"no JIT form of UnknownELBO is known"):
        elbo = UnknownELBO(max_plate_nesting=1)
        assert training_loss(elbo, model, guide, x, named, "jit")[1] == "eager"
    config, model, guide, named, x = pair(guide="mixture", mixture_components=2)
    with pytest.warns(UserWarning, match=r"--compile jit: tracing failed \(RuntimeError"):
        assert training_loss(make_elbo(config), model, guide, x, named, "jit")[1] == "eager"
    assert quietly(training_loss, make_elbo(config), model, guide, x, named, "eager")[1] == "eager"


def test_a_spline_guide_whose_trace_fails_mid_run_still_trains_exactly_as_eager(tmp_path):
    """The spline flow's boolean masks make a trace that fails on some later batch; the
    draws of the failed replay are put back, so the run equals the eager run bit for bit."""
    flows = dict(guide="spline", flow_depth=1, flow_hidden_dims=[16], epochs=1)
    with pytest.warns(UserWarning, match=r"a traced loss failed on a batch of shape"):
        jit = train(small_config(**flows), run_dir=tmp_path / "jit", progress=False)
    eager = train(small_config(**flows, compile="eager"), run_dir=tmp_path / "e", progress=False)
    ours, theirs = jit.guide.state_dict(), eager.guide.state_dict()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    assert [row["compile"] for row in jit.history] == ["jit", "eager"]


def test_a_replay_that_fails_falls_back_to_eager_once():
    config, model, guide, named, x = pair()
    traced = JitTracedLoss(make_elbo(config), model, guide)
    traced(x)
    (trace,) = traced.traced.values()

    def broken(*args):
        raise RuntimeError("shape '[]' is invalid for input of size 0")

    trace.graph = broken
    eager = make_elbo(config)(model, guide)
    with pytest.warns(UserWarning, match=r"a traced loss failed on a batch of shape \(64, 1, 8"):
        assert loss_and_grads(traced, named, x)[0] == loss_and_grads(eager, named, x)[0]
    assert quietly(traced, x).isfinite()  # eager from then on, without another warning


def test_replays_use_the_models_own_parameters_whatever_the_param_store_holds():
    config, model, guide, named, x = pair()
    traced = JitTracedLoss(make_elbo(config), model, guide)
    traced(x)
    pyro.clear_param_store()
    other_model, other_guide = build_vae(config, (1, 8, 8))
    make_elbo(config)(other_model, other_guide)(x)  # registers the same names
    ours, our_grads = loss_and_grads(traced, named, x)
    theirs, their_grads = loss_and_grads(make_elbo(config)(model, guide), named, x)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    for a, b in zip(our_grads, their_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_torch_without_torchscript_trains_eagerly_with_one_warning(tmp_path, monkeypatch):
    """PyTorch has deprecated TorchScript: a release without torch.jit.trace must still train,
    bit-identically to --compile eager, saying once why."""
    eager = train(small_config(compile="eager"), run_dir=tmp_path / "eager", progress=False)
    monkeypatch.delattr(torch.jit, "trace")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train(small_config(compile="jit"), run_dir=tmp_path / "jit", progress=False)
    said = [str(w.message) for w in caught if "--compile jit" in str(w.message)]
    assert len(said) == 1 and "has no TorchScript (torch.jit.trace)" in said[0]
    assert {row["compile"] for row in run.history} == {"eager"}
    for part in ("model", "guide"):
        ours, theirs = getattr(run, part).state_dict(), getattr(eager, part).state_dict()
        assert all(torch.equal(ours[name], theirs[name]) for name in ours), part
