"""AIS and BDMC against exact answers (pyro_vae.ais).

Linear-Gaussian VAE (tests/linear_gaussian.py): log p(x) exact. A 2-D latent whose
posterior has two modes: log p(x) by quadrature on a grid.
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae import build_vae
from pyro_vae.ais import (
    AnnealingSettings,
    ais_log_likelihood,
    annealing_schedule,
    bdmc,
    hmc_transition,
    simulate,
)
from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import EVAL_SEED, fixed_seed, stream_seed
from pyro_vae.importance import importance_log_likelihood, log_importance_weights, log_mean_exp
from tests.conftest import small_config
from tests.linear_gaussian import GaussianGuide, LinearGaussian


@pytest.fixture(scope="module")
def lg():
    return LinearGaussian()


def poor_guide(lg):
    """A guide far enough off for IS with K = 100 to be flagged (k̂ > 0.7), 4 nats low."""
    return GaussianGuide(lg, cov=0.5 * lg.cov_post, shift=0.5, diagonal=True)


def test_schedules_run_from_zero_to_one():
    for kind in ("sigmoid", "linear"):
        betas = annealing_schedule(50, kind)
        assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
    sigmoid = annealing_schedule(50, "sigmoid")
    assert sigmoid[1] < 1 / 50  # smaller steps near the ends than the linear schedule's


def test_one_annealing_step_is_importance_sampling_from_the_start(lg):
    x = lg.sample(6)
    guide = poor_guide(lg)
    settings = AnnealingSettings(num_steps=1, num_chains=32)
    estimate = ais_log_likelihood(lg.model, guide, x, settings)
    with fixed_seed(stream_seed(EVAL_SEED, 0), x.device):  # the draws of the first batch
        log_w = log_importance_weights(lg.model, guide, x, 32)
    expected = log_mean_exp(log_w.detach().double(), 0).numpy()
    np.testing.assert_allclose(estimate.log_likelihood, expected, atol=1e-5)


@pytest.mark.parametrize("start", ["guide", "prior"])
def test_ais_finds_the_exact_value_where_importance_sampling_cannot(lg, start):
    x = lg.sample(12, seed=5)
    exact = lg.exact_log_px(x).numpy()
    guide = poor_guide(lg)
    flagged = importance_log_likelihood(lg.model, guide, x, num_samples=100)
    assert flagged.summary["share_khat_above_0.7"] > 0.5
    assert (flagged.log_likelihood - exact).mean() < -2  # IS is far off
    settings = AnnealingSettings(num_steps=200, num_chains=16, leapfrog_steps=5, start=start)
    estimate = ais_log_likelihood(lg.model, guide, x, settings)
    error = estimate.log_likelihood - exact
    noise = math.sqrt(np.mean(estimate.standard_error**2) / len(x))
    assert abs(error.mean()) < 3 * noise + 0.1, (error.mean(), noise)
    assert 0.3 < estimate.summary["acceptance_mean"] < 0.99
    assert estimate.summary["ess_mean"] > 1


def bimodal_model(x):
    """z ~ N(0, I₂), x ~ N(z₁² + z₂ / 2, 0.3²): z₁ and -z₁ explain x alike."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        loc = z[..., 0] ** 2 + 0.5 * z[..., 1]
        pyro.sample("x", dist.Normal(loc.unsqueeze(-1), 0.3).to_event(1), obs=x)


def one_mode_guide(x):
    """q(z|x) around the mode z₁ = +√x only."""
    with pyro.plate("data", x.shape[0]):
        loc = torch.stack([x[:, 0].clamp(min=0).sqrt(), torch.zeros(x.shape[0])], -1)
        pyro.sample("z", dist.Normal(loc, 0.3).to_event(1))


def quadrature_log_px(x: torch.Tensor) -> np.ndarray:
    grid = torch.linspace(-6, 6, 801, dtype=torch.float64)
    z1, z2 = torch.meshgrid(grid, grid, indexing="ij")
    log_prior = dist.Normal(0.0, 1.0).log_prob(z1) + dist.Normal(0.0, 1.0).log_prob(z2)
    cell = math.log((grid[1] - grid[0]) ** 2)
    values = []
    for value in x[:, 0].double():
        log_lik = dist.Normal(z1**2 + 0.5 * z2, 0.3).log_prob(value)
        values.append(torch.logsumexp((log_prior + log_lik).flatten(), 0) + cell)
    return torch.stack(values).numpy()


def test_a_bimodal_posterior_by_quadrature():
    x = torch.tensor([[1.0], [2.0], [1.5]])
    exact = quadrature_log_px(x)
    importance = importance_log_likelihood(bimodal_model, one_mode_guide, x, num_samples=2000)
    assert (importance.log_likelihood - exact).mean() < -0.5  # one mode of two: about log 2
    settings = AnnealingSettings(num_steps=200, num_chains=256, leapfrog_steps=5, start="prior")
    estimate = ais_log_likelihood(bimodal_model, one_mode_guide, x, settings)
    error = np.abs(estimate.log_likelihood - exact)
    assert (error < 3 * estimate.standard_error + 0.05).all(), (error, estimate.standard_error)
    assert (estimate.standard_error < 0.1).all()


def test_the_hmc_transition_leaves_a_gaussian_invariant():
    scales = torch.tensor([1.0, 2.0, 0.5])
    chains = 4000

    def log_density(z):
        return -0.5 * (z["z"] / scales).pow(2).sum(-1), ()

    torch.manual_seed(0)
    z = {"z": torch.randn(chains, 1, 3) * scales}
    step = torch.full((chains, 1), 0.3)
    for _ in range(20):
        z, acceptance, _ = hmc_transition(log_density, z, step, 5)
    draws = z["z"][:, 0]
    assert acceptance.mean() > 0.5
    standard_error = scales / math.sqrt(chains)
    assert (draws.mean(0).abs() < 4 * standard_error).all()
    ratio = draws.var(0) / scales**2
    assert ((ratio - 1).abs() < 4 * math.sqrt(2 / chains)).all()


def test_bdmc_sandwiches_the_exact_value_and_the_gap_shrinks(lg):
    """The lower and upper means bracket the exact mean up to the chains' noise, and close
    in as the steps grow."""
    settings = AnnealingSettings(num_chains=4, leapfrog_steps=5)
    result = bdmc(lg.model, poor_guide(lg), num_images=16, steps=(2, 60), settings=settings,
                  num_samples=100)  # fmt: skip
    with fixed_seed(EVAL_SEED, torch.device("cpu")):  # the images bdmc simulated
        x, _ = simulate(lg.model, 16)
    exact = lg.exact_log_px(x).numpy().mean()
    rows = {row["steps"]: row for row in result.summary["rows"]}
    for row in rows.values():
        assert row["lower"] <= exact + 0.3 and exact - 0.3 <= row["upper"]
    assert rows[60]["gap"] < rows[2]["gap"] / 10
    assert rows[60]["gap"] < 1.0
    # the poor guide's IS estimate sits far below the sandwich: K = 100 was not enough
    assert rows[60]["importance_minus_lower"] < -2


def test_m2s_label_is_summed_out_inside_the_target():
    """One step from the guide with the label summed out is an unbiased estimate of the
    same log p(x) as the enumerated IS estimate: the two agree as both grow."""
    model, guide = build_vae(small_config(model="m2", labels=20, latent_dim=2), (1, 8, 8))
    x = torch.rand(3, 1, 8, 8).round()
    importance = importance_log_likelihood(model, guide, x, num_samples=4000)
    settings = AnnealingSettings(num_steps=1, num_chains=4000)
    estimate = ais_log_likelihood(model, guide, x, settings)
    np.testing.assert_allclose(estimate.log_likelihood, importance.log_likelihood, atol=0.1)


def test_bad_input_is_refused_naming_it(lg):
    x = lg.sample(2)
    for name in ("num_steps", "num_chains", "leapfrog_steps"):
        with pytest.raises(UserInputError, match=f"{name} must be an integer >= 1, got 0"):
            ais_log_likelihood(lg.model, poor_guide(lg), x, AnnealingSettings(**{name: 0}))

    def coin_model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            z = pyro.sample("z", dist.Normal(c, 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def coin_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(UserInputError, match=r"latent site 'c' is discrete"):
        ais_log_likelihood(coin_model, coin_guide, torch.zeros(2, 1))
