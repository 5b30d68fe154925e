"""The model and guide are genuine Pyro programs: Pyro's own tools run on them unchanged."""

import pyro
import pyro.infer
import pyro.optim
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_vae import build_vae
from pyro_vae.data import load_data
from tests.conftest import small_config


@pytest.fixture
def pair_and_batch():
    data = load_data("digits", "static")
    model, guide = build_vae(small_config(), data.image_shape)
    return model, guide, next(data.eval_batches("test", 32))


def sample_sites(trace):
    return {
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }


def test_traces_share_the_latent_site(pair_and_batch):
    model, guide, x = pair_and_batch
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    latent = {n for n in sample_sites(model_trace) if not model_trace.nodes[n]["is_observed"]}
    assert latent == sample_sites(guide_trace) == {"z"}
    assert model_trace.nodes["x"]["is_observed"]
    assert model_trace.nodes["z"]["fn"].event_shape == (8,)
    assert model_trace.nodes["x"]["fn"].event_shape == (1, 8, 8)
    # pyro.module registered the networks' parameters as Pyro param sites.
    params = [n for n, s in guide_trace.nodes.items() if s["type"] == "param"]
    assert any(n.startswith("guide$$$encoder") for n in params)


def test_pyro_svi_with_trace_elbo_trains_the_pair(pair_and_batch):
    model, guide, x = pair_and_batch
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    losses = [svi.step(x) for _ in range(60)]
    assert losses[-1] < 0.8 * losses[0]


def test_trace_mean_field_elbo_uses_the_analytic_kl(pair_and_batch):
    model, guide, x = pair_and_batch
    loss = pyro.infer.TraceMeanField_ELBO().loss(model, guide, x)
    assert torch.isfinite(torch.tensor(loss))


def test_predictive_generates_images_and_posterior_draws(pair_and_batch):
    model, guide, x = pair_and_batch
    prior_draws = pyro.infer.Predictive(model, num_samples=3)(num_samples=5)
    assert prior_draws["x"].shape == (3, 5, 1, 8, 8)
    assert set(prior_draws["x"].unique().tolist()) <= {0.0, 1.0}
    posterior = pyro.infer.Predictive(model, guide=guide, num_samples=4, return_sites=["z"])(x)
    assert posterior["z"].shape == (4, 32, 8)


def test_vectorized_particles_broadcast_through_the_model(pair_and_batch):
    model, guide, x = pair_and_batch
    elbo = pyro.infer.Trace_ELBO(num_particles=7, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.differentiable_loss(model, guide, x)
    assert loss.shape == () and torch.isfinite(loss)
    with pyro.plate("particles", 7, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    assert model_trace.nodes["x"]["log_prob"].shape == (7, 32)


def test_importance_sampling_runs_on_the_pair(pair_and_batch):
    model, guide, x = pair_and_batch
    posterior = pyro.infer.Importance(model, guide=guide, num_samples=5).run(x)
    assert len(posterior.log_weights) == 5
