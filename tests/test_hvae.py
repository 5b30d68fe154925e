"""The two-level hierarchical VAE: a Pyro program over z2 -> z1 -> x, scored on both layers."""

import numpy as np
import pytest
import torch
from pyro import poutine

from pyro_vae import build_vae, evaluate, load_run, log_likelihood, train, visualize
from tests.conftest import latent_sites, one_weight_and_its_draw, small_config


def hvae_config(**overrides):
    return small_config(**{"model": "hvae", "latent_dim": 6, "top_latent_dim": 3, **overrides})


@pytest.mark.parametrize(
    "model, guide_order", [("hvae", ["z1", "z2"]), ("hvae-skip", ["z2", "z1"])]
)
def test_model_and_guide_share_both_latent_sites(model, guide_order):
    """Burda et al.'s chain infers z1 first, the VampPrior paper's model (tests/
    test_hvae_skip.py) z2 first; both models draw z2, then z1."""
    model, guide = build_vae(hvae_config(model=model), (1, 8, 8))
    x = torch.rand(5, 1, 8, 8).round()
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)

    assert latent_sites(guide_trace) == guide_order and latent_sites(model_trace) == ["z2", "z1"]
    assert model_trace.nodes["z1"]["value"].shape == (5, 6)
    assert model_trace.nodes["z2"]["value"].shape == (5, 3)


def test_log_likelihood_covers_both_layers():
    """log w = log p(z2) + log p(z1|z2) + log p(x|z1) - log q(z1|x) - log q(z2|z1)."""
    model, guide = build_vae(hvae_config(), (1, 8, 8))
    x = torch.rand(4, 1, 8, 8).round()
    log_w, (z1, z2) = one_weight_and_its_draw(model, guide, x, ("z1", "z2"))
    by_hand = (
        model.prior((4,)).log_prob(z2)
        + model.bottom(z2).log_prob(z1)
        + model.likelihood(model.decoder(z1)).log_prob(x)
        - guide.bottom.posterior(x).log_prob(z1)
        - guide.top.posterior(z1).log_prob(z2)
    )
    torch.testing.assert_close(log_w, by_hand, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"prior": "vamp", "prior_components": 5},
        {"guide": "iaf", "flow_hidden_dims": [16]},
        {"top_guide": "planar", "flow_hidden_dims": [16]},
    ],
)
def test_hvae_trains_and_its_log_likelihood_is_at_least_its_elbo(tmp_path, overrides):
    run = train(hvae_config(epochs=3, **overrides), run_dir=tmp_path / "run", progress=False)
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"] + 5
    estimate = log_likelihood(run, num_samples=200, max_images=40)
    assert np.isfinite(estimate.log_likelihood).all()
    assert estimate.summary["log_likelihood"] >= estimate.summary["elbo"]
    assert evaluate(load_run(run.run_dir)) == run.test_elbo


def test_latent_tools_work_on_the_top_layer(tmp_path):
    run = train(hvae_config(epochs=1), run_dir=tmp_path / "run", progress=False)
    report = visualize(run, num_pairs=2, max_dims=3)
    assert report.exists()
    assert (tmp_path / "run" / "viz" / "traversals.png").exists()
