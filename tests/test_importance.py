"""The importance-sampled log-likelihood against exact answers.

Linear-Gaussian VAE: p(z) = N(0, I_d), p(x|z) = N(Wz + b, σ²I_D), so
    log p(x)  = log N(x; b, WWᵀ + σ²I)                              (exact)
    p(z | x)  = N(Σ Wᵀ(x - b) / σ², Σ),  Σ = (I + WᵀW / σ²)⁻¹       (exact posterior)
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.errors import UserInputError
from pyro_vae.importance import importance_log_likelihood, iwae_bound, log_importance_weights
from tests.linear_gaussian import GaussianGuide, LinearGaussian


@pytest.fixture(scope="module")
def lg():
    return LinearGaussian()


def test_exact_posterior_gives_equal_weights_and_the_exact_value(lg):
    x = lg.sample(40)
    est = importance_log_likelihood(lg.model, GaussianGuide(lg), x, num_samples=200)
    exact = lg.exact_log_px(x).numpy()
    np.testing.assert_allclose(est.log_likelihood, exact, atol=1e-4)
    np.testing.assert_allclose(est.elbo, exact, atol=1e-4)  # no gap either
    log_w = log_importance_weights(lg.model, GaussianGuide(lg), x, 200)
    assert (log_w.max(0).values - log_w.min(0).values).max() < 1e-4  # zero spread
    assert est.ess.min() > 199.9
    assert est.summary["khat_max"] < 0.5


def test_arbitrary_gaussian_guide_is_within_three_standard_errors(lg):
    x = lg.sample(200, seed=2)
    guide = GaussianGuide(lg, cov=1.8 * lg.cov_post, shift=0.2, diagonal=True)
    est = importance_log_likelihood(lg.model, guide, x, num_samples=2000)
    error = est.log_likelihood - lg.exact_log_px(x).numpy()
    standard_error = error.std(ddof=1) / math.sqrt(len(error))
    assert abs(error.mean()) < 3 * standard_error + 1e-3
    assert est.summary["gap"] > 0.05  # the diagonal guide is measurably worse than exact


def test_bounds_are_ordered(lg):
    x = lg.sample(300, seed=3)
    guide = GaussianGuide(lg, cov=0.5 * lg.cov_post, shift=0.3, diagonal=True)
    est = importance_log_likelihood(lg.model, guide, x, num_samples=500)
    means = [est.summary["elbo"]] + [est.summary["bounds"][f"L_{k}"] for k in (5, 50, 500)]
    assert means == sorted(means)
    assert means[-1] < float(lg.exact_log_px(x).mean())
    assert est.summary["bounds"]["L_1"] == pytest.approx(est.summary["elbo"])
    assert est.summary["bounds"]["L_500"] == pytest.approx(est.summary["log_likelihood"])


def test_agrees_with_pyro_renyi_elbo_alpha_zero_per_image(lg):
    x = lg.sample(30, seed=4)
    guide = GaussianGuide(lg, cov=1.5 * lg.cov_post, diagonal=True)
    est = importance_log_likelihood(lg.model, guide, x, num_samples=1000)
    renyi = pyro.infer.RenyiELBO(
        alpha=0, num_particles=1000, vectorize_particles=True, max_plate_nesting=1
    )
    # RenyiELBO sums log-weights over the data plate: one image at a time is per-datapoint.
    pyro_estimate = np.array([-renyi.loss(lg.model, guide, x[i : i + 1]) for i in range(30)])
    difference = est.log_likelihood - pyro_estimate
    assert abs(difference.mean()) < 4 * difference.std(ddof=1) / math.sqrt(30) + 1e-3


def test_khat_flags_a_poor_guide(lg):
    x = lg.sample(50, seed=5)
    poor = GaussianGuide(lg, cov=0.05 * lg.cov_post, shift=0.5, diagonal=True)
    est = importance_log_likelihood(lg.model, poor, x, num_samples=1000)
    assert est.summary["share_khat_above_0.7"] > 0.5
    assert est.warning.startswith("k̂ > 0.7 for")
    good = importance_log_likelihood(lg.model, GaussianGuide(lg), x, num_samples=1000)
    assert good.warning is None


def test_chunking_does_not_change_the_answer(lg):
    x = lg.sample(10, seed=6)
    guide = GaussianGuide(lg, cov=2.0 * lg.cov_post, diagonal=True)
    whole = importance_log_likelihood(lg.model, guide, x, num_samples=64, max_elements=10**9)
    pieces = importance_log_likelihood(lg.model, guide, x, num_samples=64, max_elements=50)
    assert whole.log_likelihood.shape == pieces.log_likelihood.shape == (10,)
    # Different chunking draws different particles; both must estimate the same values.
    assert np.abs(whole.log_likelihood - pieces.log_likelihood).max() < 0.5


def test_iwae_bound_uses_disjoint_groups():
    log_w = torch.log(torch.tensor([[1.0], [3.0], [2.0], [6.0]]))
    assert iwae_bound(log_w, 2).item() == pytest.approx(0.5 * (math.log(2.0) + math.log(4.0)))
    assert iwae_bound(log_w, 1).item() == pytest.approx(log_w.mean().item())


def test_site_outside_the_data_plate_is_refused(lg):
    def guide_with_global(x):
        pyro.sample("tau", dist.Normal(0.0, 1.0))
        GaussianGuide(lg)(x)

    def model_with_global(x):
        pyro.sample("tau", dist.Normal(0.0, 1.0))
        lg.model(x)

    with pytest.raises(UserInputError, match="site 'tau' is outside the 'data' plate"):
        log_importance_weights(model_with_global, guide_with_global, lg.sample(3), 4)


def test_bad_arguments(lg):
    with pytest.raises(UserInputError, match="num_samples must be an integer >= 1"):
        importance_log_likelihood(lg.model, GaussianGuide(lg), lg.sample(2), num_samples=0)
    with pytest.raises(UserInputError, match=r"non-empty \(N, ...\)"):
        importance_log_likelihood(lg.model, GaussianGuide(lg), torch.zeros(0, 6), num_samples=5)
    with pytest.raises(UserInputError, match=r"site 'x': its value, of shape \(2, 6\), does not"):
        importance_log_likelihood(lg.model, GaussianGuide(lg), torch.zeros(3, 6), num_samples=5)


def test_on_a_trained_vae(trained_run):
    x = next(trained_run.data.eval_batches("test", 50))
    est = importance_log_likelihood(trained_run.model, trained_run.guide, x, num_samples=500)
    assert np.isfinite(est.log_likelihood).all()
    assert est.summary["log_likelihood"] >= est.summary["elbo"]


def test_the_memory_budget_counts_a_conv_nets_feature_maps_not_just_pixels():
    from pyro_vae.importance import values_per_draw
    from pyro_vae.registry import build_vae
    from tests.conftest import small_config

    image = torch.bernoulli(torch.full((1, 1, 8, 8), 0.5))
    mlp = build_vae(small_config(hidden_dims=[100]), (1, 8, 8))
    assert values_per_draw(*mlp, image) == 100  # the widest layer, above the 64 pixels
    conv = build_vae(small_config(encoder="conv", decoder="conv", conv_channels=[16]), (1, 8, 8))
    assert values_per_draw(*conv, image) == 16 * 8 * 8  # the decoder's last feature map
    # A VampPrior's encoder pass over its 100 pseudo-inputs (100 x 64 values) does not grow
    # with the particles; each code's log-density under the 100 components does (100
    # values: the diagonal-normal components are scored without a 100 x 8 broadcast).
    vamp = build_vae(small_config(prior="vamp", prior_components=100), (1, 8, 8))
    assert values_per_draw(*vamp, image) == 100
    full = build_vae(
        small_config(prior="vamp", prior_components=100, guide="full-normal"), (1, 8, 8)
    )
    assert values_per_draw(*full, image) == 100 * 8  # other components: the broadcast


class LabelledLinearGaussian:
    """m2's shape with a known answer: y ~ Cat(1/C), z ~ N(0, I), x | y, z ~ N(Wz + b_y, σ²I),
    so p(x) = (1/C) Σ_y N(x; b_y, WWᵀ + σ²I), and q(z | x, y) can be the exact posterior
    N(Σ Wᵀ(x - b_y) / σ², Σ). With it every weight w_{y,k} = p(x, y): the enumerated
    estimate has no variance at all. The guide's q(y|x) is uniform or the exact p(y|x)."""

    C, D, P, SIGMA = 3, 2, 4, 0.7

    def __init__(self, exact_labels: bool):
        generator = torch.Generator().manual_seed(5)
        self.W = torch.randn(self.P, self.D, generator=generator)
        self.B = 2 * torch.randn(self.C, self.P, generator=generator)
        self.cov = torch.linalg.inv(torch.eye(self.D) + self.W.T @ self.W / self.SIGMA**2)
        self.exact_labels = exact_labels

    def marginals(self, x):  # log p(x, y) for every class: (N, C)
        cov = self.W @ self.W.T + self.SIGMA**2 * torch.eye(self.P)
        log_px_y = dist.MultivariateNormal(self.B, cov).log_prob(x[:, None])
        return log_px_y - math.log(self.C)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=torch.zeros(self.C)).expand([x.shape[0]]))
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], self.D]).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.B[y], self.SIGMA).to_event(1), obs=x)

    def guide(self, x):
        joint = self.marginals(x)
        logits = joint if self.exact_labels else torch.zeros_like(joint)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
            mean = (x - self.B[y]) @ self.W @ self.cov.T / self.SIGMA**2
            pyro.sample("z", dist.MultivariateNormal(mean, self.cov))

    def sample(self, n):
        generator = torch.Generator().manual_seed(6)
        y = torch.randint(self.C, (n,), generator=generator)
        z = torch.randn(n, self.D, generator=generator)
        noise = self.SIGMA * torch.randn(n, self.P, generator=generator)
        return z @ self.W.T + self.B[y] + noise


@pytest.mark.parametrize("exact_labels", [False, True])
def test_enumerated_label_with_exact_posteriors_gives_the_exact_value(exact_labels):
    m2 = LabelledLinearGaussian(exact_labels)
    x = m2.sample(30)
    est = importance_log_likelihood(m2.model, m2.guide, x, num_samples=100)
    exact = torch.logsumexp(m2.marginals(x), 1).numpy()
    np.testing.assert_allclose(est.log_likelihood, exact, atol=1e-4)  # no variance at all
    np.testing.assert_allclose(est.ess, 100, rtol=1e-4)
    # the enumerated ELBO Σ_y q(y|x) (log p(x,y) - log q(y|x)) is below log p(x) by
    # KL(q(y|x) || p(y|x)): zero at the exact q(y|x), positive at the uniform one
    log_q = torch.log_softmax(m2.marginals(x), 1) if exact_labels else -math.log(m2.C)
    q = torch.softmax(m2.marginals(x), 1) if exact_labels else torch.full((30, m2.C), 1 / m2.C)
    elbo = (q * (m2.marginals(x) - log_q)).sum(1).numpy()
    np.testing.assert_allclose(est.elbo, elbo, atol=1e-4)
    assert (est.log_likelihood >= est.elbo - 1e-5).all()
    if not exact_labels:
        assert (est.log_likelihood - est.elbo).mean() > 0.1


def test_brute_force_that_samples_the_label_agrees_within_its_standard_error():
    """Sampling y from q(y|x) instead of summing it: unbiased for p(x), noisier."""
    m2 = LabelledLinearGaussian(exact_labels=False)
    x = m2.sample(30)
    exact = torch.logsumexp(m2.marginals(x), 1).numpy()
    runs = [
        importance_log_likelihood(
            m2.model, m2.guide, x, num_samples=400, enumerate_sites=False, seed=seed
        ).log_likelihood
        for seed in range(5)
    ]
    brute = np.mean(runs, 0)
    spread = np.std(runs, 0, ddof=1) / math.sqrt(len(runs))
    assert spread.max() > 1e-3  # it is noisy, unlike the enumerated estimate
    # per image within 4 standard errors (plus the log of a mean's small downward bias)
    assert (np.abs(brute - exact) <= 4 * spread + 0.01).all()
