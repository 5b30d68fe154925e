"""Every prior, likelihood and network trains with the guides, objectives and checkpoints."""

import numpy as np
import pytest

from pyro_vae import evaluate, load_run, log_likelihood, train
from tests.conftest import small_config


def check_run(run, tmp_path, min_gain=5.0):
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"] + min_gain
    estimate = log_likelihood(run, num_samples=100, max_images=40)
    assert np.isfinite(estimate.log_likelihood).all()
    assert estimate.summary["log_likelihood"] >= estimate.summary["elbo"]
    assert evaluate(load_run(run.run_dir)) == run.test_elbo  # checkpoints round-trip
    return estimate


@pytest.mark.parametrize("prior", ["learned-normal", "mog", "vamp", "flow"])
def test_each_prior_trains(tmp_path, prior):
    config = small_config(epochs=3, prior=prior, prior_components=5)
    check_run(train(config, run_dir=tmp_path / "run", progress=False), tmp_path)


@pytest.mark.parametrize(
    "likelihood",
    ["continuous-bernoulli", "gaussian", "gaussian-learned", "laplace", "discretized-logistic"],
)
def test_each_likelihood_trains_on_grey_digits(tmp_path, likelihood):
    config = small_config(epochs=3, likelihood=likelihood)
    run = train(config, run_dir=tmp_path / "run", progress=False)
    assert run.data.binarize == "none"  # grey values by default
    estimate = check_run(run, tmp_path, min_gain=1.0)
    if likelihood == "discretized-logistic":
        bits = estimate.summary["bits_per_dim"]
        assert bits == pytest.approx(-estimate.summary["log_likelihood"] / (64 * np.log(2)))
        assert 0 < bits < 8


def test_conv_vae_trains_on_digits(tmp_path):
    config = small_config(epochs=3, encoder="conv", decoder="conv", conv_channels=[8, 16])
    run = train(config, run_dir=tmp_path / "run", progress=False)
    check_run(run, tmp_path)


@pytest.mark.parametrize(
    "overrides",
    [
        {"prior": "vamp", "guide": "iaf", "flow_hidden_dims": [16]},
        {"prior": "mog", "guide": "full-normal", "elbo": "iwae", "num_particles": 3},
        {"prior": "flow", "likelihood": "gaussian", "guide": "student-t"},
        {"prior": "vamp", "encoder": "conv", "decoder": "conv", "conv_channels": [8]},
    ],
)
def test_combinations(tmp_path, overrides):
    config = small_config(epochs=2, **overrides)
    check_run(train(config, run_dir=tmp_path / "run", progress=False), tmp_path, min_gain=1.0)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_conv_networks_fit_mnist_and_cifar_shapes(shape):
    import torch

    from pyro_vae import TrainConfig, build_vae, make_elbo

    config = TrainConfig(
        encoder="conv",
        decoder="conv",
        likelihood="discretized-logistic",
        latent_dim=6,
        hidden_dims=[32],
        conv_channels=[8, 16],
    )
    model, guide = build_vae(config, shape)
    x = torch.randint(0, 256, (4, *shape)).float() / 255
    assert guide.encoder(x).shape == (4, 32)
    assert model.decoder(torch.randn(5, 4, 6)).shape == (5, 4, 2 * shape[0], *shape[1:])
    loss = make_elbo(config)(model, guide)(x)
    loss.backward()
    assert torch.isfinite(loss)
