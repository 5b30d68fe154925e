"""Every variational family: a reparameterized Pyro guide that trains, scores and reloads."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro_vae.guides import FlowGuide, MLPEncoder

from pyro_vae import REGISTRY, evaluate, load_run, train
from pyro_vae.config import TrainConfig
from pyro_vae.importance import importance_log_likelihood
from pyro_vae.registry import lookup
from tests.conftest import small_config
from tests.linear_gaussian import SHAPE, LinearGaussian

GUIDES = list(REGISTRY["guide"])
SMALL_FLOWS = dict(flow_depth=2, flow_hidden_dims=[16])


def make_guide(name, latent_dim=4, image_shape=(1, 8, 8), **options):
    config = TrainConfig(latent_dim=latent_dim, guide_rank=2, mixture_components=3, **options)
    encoder = MLPEncoder(image_shape, [32], "softplus")
    return lookup("guide", name)(config, encoder, latent_dim)


@pytest.mark.parametrize("name", GUIDES)
def test_posterior_shapes_and_scores_of_own_samples(name):
    guide = make_guide(name, **SMALL_FLOWS)
    x = torch.rand(5, 1, 8, 8)
    q = guide.posterior(x)
    assert q.batch_shape == (5,) and q.event_shape == (4,) and q.has_rsample
    z = q.rsample()
    assert torch.isfinite(q.log_prob(z)).all()
    # Under a particle plate (how the IWAE bound and log p̂(x) run) shapes broadcast.
    with pyro.plate("particles", 3, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
    trace.compute_log_prob()
    assert trace.nodes["z"]["value"].shape == (3, 5, 4)
    assert trace.nodes["z"]["log_prob"].shape == (3, 5)
    assert guide.code(x).shape == (5, 4)


@pytest.mark.parametrize("name", GUIDES)
def test_every_family_trains_on_digits_and_scores_its_likelihood(tmp_path, name):
    config = small_config(epochs=3, guide=name, **SMALL_FLOWS)
    run = train(config, run_dir=tmp_path / "run", progress=False)
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"] + 10
    x = next(run.data.eval_batches("test", 60))
    estimate = importance_log_likelihood(run.model, run.guide, x, num_samples=200)
    assert np.isfinite(estimate.log_likelihood).all()
    assert estimate.summary["log_likelihood"] >= estimate.summary["elbo"]
    assert evaluate(load_run(tmp_path / "run")) == run.test_elbo  # checkpoints round-trip


@pytest.mark.parametrize("kind", ["iaf", "planar", "radial", "spline"])
def test_flow_log_prob_is_the_change_of_variables(kind):
    """log q(z) = log N(u) - log|det ∂z/∂u|, with the Jacobian taken by autograd."""
    torch.manual_seed(0)
    guide = make_guide(kind, latent_dim=3, **SMALL_FLOWS)
    assert isinstance(guide, FlowGuide)
    x = torch.rand(1, 1, 8, 8)
    base, flows = guide._base_and_flows(x)
    q = dist.TransformedDistribution(base, flows)
    u = base.sample()
    z = u
    for flow in flows:
        z = flow(z)
    log_q = q.log_prob(z)  # Pyro's value, from the transforms' caches

    def push(v):
        for flow in flows:
            v = flow(v)
        return v

    jacobian = torch.autograd.functional.jacobian(lambda v: push(v.unsqueeze(0))[0], u[0])
    expected = base.log_prob(u) - torch.linalg.slogdet(jacobian).logabsdet
    torch.testing.assert_close(log_q, expected, rtol=1e-4, atol=1e-4)
    if kind in ("iaf", "spline"):  # invertible: scoring a fresh tensor inverts the flows
        torch.testing.assert_close(q.log_prob(z.detach().clone()), log_q, rtol=1e-3, atol=1e-3)


def fit_guide_to_linear_gaussian(name, steps=2000, **options):
    lg = LinearGaussian()
    lg.model.eval()
    for param in lg.model.parameters():
        param.requires_grad_(False)  # the model is fixed: only q(z|x) learns
    pyro.set_rng_seed(0)
    config = TrainConfig(guide=name, **options)
    guide = lookup("guide", name)(config, MLPEncoder(SHAPE, [64], "softplus"), 3)
    elbo = pyro.infer.Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    loss_fn = elbo(lg.model, guide)
    optimizer = torch.optim.Adam(guide.parameters(), lr=3e-3)
    data = lg.sample(2000, seed=10)
    for _ in range(steps):
        loss = loss_fn(data[torch.randint(0, 2000, (256,))])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = lg.sample(500, seed=11)
    estimate = importance_log_likelihood(lg.model, guide, test, num_samples=500)
    return estimate.summary, lg.exact_log_px(test).mean().item()


def test_full_normal_reaches_the_exact_posterior_and_diag_normal_cannot():
    full, exact = fit_guide_to_linear_gaussian("full-normal")
    assert abs(full["elbo"] - exact) < 0.05  # the ELBO itself reaches log p(x)
    assert abs(full["log_likelihood"] - exact) < 0.05
    assert full["gap"] < 0.05
    diag, _ = fit_guide_to_linear_gaussian("diag-normal")
    assert diag["gap"] > 0.1  # a correlated posterior: the mean-field gap stays
    assert abs(diag["log_likelihood"] - exact) < 0.05  # while log p̂(x) is still right
    # This posterior's σ lie well inside [e^-3, e]: bounding log σ² to [-6, 2] (the
    # VampPrior authors' encoder) costs the diag-normal guide nothing here.
    # σ = exp(a), Burda et al.'s, is another map onto (0, ∞): the same optimum.
    for scale in ("bounded-logvar", "exp"):
        linked, _ = fit_guide_to_linear_gaussian("diag-normal", guide_scale=scale)
        assert abs(linked["elbo"] - diag["elbo"]) < 0.02, scale
        assert abs(linked["log_likelihood"] - exact) < 0.05, scale


@pytest.mark.parametrize("kind", ["zuko-nsf", "zuko-naf"])
def test_zuko_flows_are_normalized_densities_that_score_their_samples(kind):
    """Brute force in two dimensions: q(z|x) integrates to 1 on a grid, and the density
    cached with a sample (Zuko's rsample_and_log_prob) is the one computed afresh."""
    pytest.importorskip("zuko")
    torch.manual_seed(0)
    guide = make_guide(kind, latent_dim=2, **SMALL_FLOWS)
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        q = guide.posterior(x)
        z = q.rsample((4,))  # (4, 1, 2)
        torch.testing.assert_close(q.log_prob(z), q.log_prob(z.clone()), rtol=1e-4, atol=1e-4)
        side = torch.linspace(-8, 8, 321)
        grid = torch.stack(torch.meshgrid(side, side, indexing="ij"), -1).reshape(-1, 1, 2)
        mass = q.log_prob(grid).exp().sum() * (side[1] - side[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=0.01)


def test_zuko_families_say_how_to_install_zuko(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_zuko(name, *args, **kwargs):
        if name == "zuko":
            raise ImportError("No module named 'zuko'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_zuko)
    from pyro_vae.errors import UserInputError

    with pytest.raises(UserInputError, match=r"pip install 'pyro-vae\[zuko\]'"):
        make_guide("zuko-nsf")
