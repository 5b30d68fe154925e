"""importance_log_likelihood on Pyro pairs users write themselves (issue 16): a VAE written as
Pyro's VAE tutorial writes it, a pair of plain functions of ``pyro.param``s, a ``PyroModule``
pair; and one clear refusal for each pair the estimate cannot score."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal

from pyro_vae import importance_log_likelihood
from pyro_vae.errors import UserInputError
from pyro_vae.importance import check_pair
from pyro_vae.registry import build_vae
from tests.conftest import small_config
from tests.linear_gaussian import LATENT, PIXELS, SIGMA, LinearGaussian
from tests.user_pairs import (
    PyroDecoder,
    PyroEncoder,
    TutorialVAE,
    functional_model,
)


@pytest.fixture(scope="module")
def tutorial(trained_run):
    """The tutorial VAE trained with Pyro's own SVI on the digits, and the test images."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    vae = TutorialVAE()
    train = torch.bernoulli(trained_run.data.split("train").float() / 255)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for step in range(250):
        svi.step(train[(step * 128) % 1280 :][:128])
    return vae, trained_run.data.split("test").float() / 255


def test_the_tutorial_vae_agrees_with_its_registry_twin_of_the_same_weights(tutorial):
    vae, x = tutorial
    model, guide = build_vae(small_config(), (1, 8, 8))
    theirs = [*vae.encoder.parameters(), *vae.decoder.parameters()]
    ours = [*guide.parameters(), *model.parameters()]
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    with torch.no_grad():
        for mine, given in zip(ours, theirs):
            mine.copy_(given)
    user = importance_log_likelihood(vae.model, vae.guide, x[:60], num_samples=300)
    registry = importance_log_likelihood(model, guide, x[:60], num_samples=300)
    # The same network, the same draws: the same numbers, and finite, reliable ones.
    np.testing.assert_allclose(user.log_likelihood, registry.log_likelihood, atol=1e-4)
    np.testing.assert_allclose(user.khat, registry.khat, atol=1e-3)
    assert user.summary["log_likelihood"] > user.summary["elbo"] > -60


def test_the_tutorial_vae_agrees_with_pyro_renyi_elbo_alpha_zero_per_image(tutorial):
    vae, x = tutorial
    x = x[:30]
    est = importance_log_likelihood(vae.model, vae.guide, x, num_samples=500)
    renyi = RenyiELBO(alpha=0, num_particles=500, vectorize_particles=True, max_plate_nesting=1)
    # RenyiELBO sums over the data plate: one image at a time is its per-image L_500.
    pyro_estimate = np.array([-renyi.loss(vae.model, vae.guide, x[i : i + 1]) for i in range(30)])
    difference = est.log_likelihood - pyro_estimate
    assert abs(difference.mean()) < 4 * difference.std(ddof=1) / math.sqrt(30) + 1e-3


def test_modules_go_to_eval_mode_and_come_back(tutorial):
    vae, x = tutorial
    vae.train()
    vae.encoder.fc1.eval()  # a mixed state, restored module by module
    seen = []
    original = vae.guide

    def guide(x):
        seen.append((vae.training, vae.decoder.fc3.training))
        return original(x)

    guide.__self__ = vae  # a wrapped bound method still names its module
    importance_log_likelihood(vae.model, guide, x[:4], num_samples=10)
    assert set(seen) == {(False, False)}
    assert vae.training and vae.decoder.fc3.training and not vae.encoder.fc1.training


# The functional pair of tests/user_pairs.py with its guide replaced by the exact posterior
# of the linear-Gaussian model, whose log p(x) is known in closed form.
def exact_posterior_guide(x):
    weight, bias = pyro.param("weight"), pyro.param("bias")
    cov = torch.linalg.inv(torch.eye(LATENT) + weight.T @ weight / SIGMA**2)
    loc = (x - bias) @ weight @ cov.T / SIGMA**2
    with pyro.plate("batch", x.shape[0]):
        pyro.sample("z", dist.MultivariateNormal(loc, cov))


def test_a_functional_pair_of_pyro_params_gives_the_exact_log_likelihood():
    lg = LinearGaussian()
    pyro.param("weight", lg.W.clone())
    pyro.param("bias", lg.b.clone())
    x = lg.sample(25).reshape(25, PIXELS)
    est = importance_log_likelihood(
        functional_model, exact_posterior_guide, x, num_samples=50, data_plate="batch"
    )
    # The guide is the exact posterior: every weight equals p(x), with no spread.
    np.testing.assert_allclose(est.log_likelihood, lg.exact_log_px(x).numpy(), atol=1e-4)
    np.testing.assert_allclose(est.elbo, est.log_likelihood, atol=1e-4)


def test_a_pyro_module_pair_runs_in_eval_mode_and_bounds_are_ordered():
    model, guide = PyroDecoder(), PyroEncoder()
    x = LinearGaussian().sample(40).reshape(40, PIXELS)
    est = importance_log_likelihood(model, guide, x, num_samples=500)
    repeat = importance_log_likelihood(model, guide, x, num_samples=500)
    np.testing.assert_array_equal(est.log_likelihood, repeat.log_likelihood)  # seeded
    means = [est.summary["elbo"]] + [est.summary["bounds"][f"L_{k}"] for k in (5, 50, 500)]
    assert means == sorted(means)
    assert model.training and model.dropout.training  # restored
    with torch.no_grad():
        model.eval()
        exact = dist.MultivariateNormal(
            model.decode.bias,
            model.decode.weight @ model.decode.weight.T
            + model.log_sigma.exp() ** 2 * torch.eye(PIXELS),
        ).log_prob(x)
    # The model is linear-Gaussian once dropout is off: the estimate is within MC error.
    error = est.log_likelihood - exact.numpy()
    assert abs(error.mean()) < 4 * error.std(ddof=1) / math.sqrt(40) + 0.02


# Each pair below breaks one requirement; the error names the site and the fix.
def _model(x, plate_size=None, subsample=None, observe=True, event=True, extra=None):
    with pyro.plate("data", plate_size or x.shape[0], subsample_size=subsample):
        prior = dist.Normal(torch.zeros(LATENT), 1.0)
        z = pyro.sample("z", prior.to_event(1) if event else prior)
        if extra:
            pyro.sample(
                extra, dist.Categorical(logits=torch.zeros(3)), infer={"enumerate": "parallel"}
            )
        loc = z.sum(-1, keepdim=True).expand(*z.shape[:-1], PIXELS)
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x if observe else None)


def _guide(x, extra=None, outside=False):
    if outside:
        pyro.sample("tau", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], LATENT), 1.0).to_event(1))
        if extra:
            pyro.sample(extra, dist.Normal(torch.zeros(x.shape[0]), 1.0))


X = torch.randn(5, PIXELS)


REFUSALS = [
    (_model, lambda x: _guide(x, outside=True), "guide site 'tau' is outside the 'data' plate"),
    (lambda x: _model(x, plate_size=100), _guide, "plate 'data' has size 100.* batch holds 2"),
    (lambda x: _model(x, plate_size=100, subsample=2), _guide, "subsampled to 2, but the batch"),
    (lambda x: _model(x, observe=False), _guide, "the model has no observed site"),
    (_model, lambda x: _guide(x, extra="w"), "guide site 'w' is not a latent site of the model"),
    (_model, lambda x: _guide(x, extra="x"), "guide site 'x' .*the model observes it"),
    (lambda x: _model(x, extra="y"), _guide, "model site 'y' is latent but .*enumerating"),
    (lambda x: _model(x, event=False), _guide, "batch of 2 images failed: .*site z.*to_event"),
]


@pytest.mark.parametrize("model, guide, message", REFUSALS)
def test_a_pair_the_estimate_cannot_score_is_refused_with_the_site_and_the_fix(
    model, guide, message
):
    with pytest.raises(UserInputError, match=message):
        importance_log_likelihood(model, guide, X, num_samples=4)


@pytest.mark.parametrize("autoguide", [AutoNormal, AutoDiagonalNormal])
def test_autoguides_are_refused_as_not_amortized(autoguide):
    guide = autoguide(_model)
    guide(X)  # fit to this batch: parameters per data point, not a function of x
    with pytest.raises(UserInputError, match=f"{autoguide.__name__} is not an amortized guide"):
        check_pair(_model, guide, X)
