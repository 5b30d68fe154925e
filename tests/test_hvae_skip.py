"""The VampPrior paper's two-level VAE: p(z2) p(z1|z2) p(x|z1,z2) with q(z2|x) q(z1|x,z2).

Linear-Gaussian version, all of it known in closed form: with ε = (z2, e1, e) independent,
z2 ~ N(0, I), e1 ~ N(0, s²I), e ~ N(0, σ²I),

    z1 = A z2 + a + e1,   x = B z1 + C z2 + b + e,

(z2, z1, x) is one Gaussian N(m, M D Mᵀ); log p(x), p(z2 | x) and p(z1 | x, z2) follow by
Gaussian conditioning, and a guide made of those two exact conditionals gives every
importance weight the value log p(x).
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro_vae.guides.hierarchical_skip import SkipHierarchicalGuide
from pyro_vae.models.hvae_skip import SkipDecoder, SkipHierarchicalVAEModel
from pyro_vae.models.priors import StandardNormalPrior
from torch import nn

from pyro_vae import build_vae, evaluate, load_run, log_likelihood, train, visualize
from pyro_vae.errors import UserInputError
from pyro_vae.importance import importance_log_likelihood, log_importance_weights
from tests.conftest import one_weight_and_its_draw, small_config

TOP, BOTTOM, PIXELS, S, SIGMA = 2, 3, 5, 0.7, 0.5
SHAPE = (1, 1, PIXELS)


def skip_config(**overrides):
    return small_config(**{"model": "hvae-skip", "latent_dim": 6, "top_latent_dim": 3, **overrides})


class Gaussian:
    """p(x|z1,z2) = N(mean, σ²I) over a (1, 1, PIXELS) image."""

    def __call__(self, mean):
        return dist.Normal(mean, SIGMA).to_event(3)

    def param_shape(self, image_shape):
        return image_shape


class LinearSkip:
    """The linear-Gaussian two-level model as a ``SkipHierarchicalVAEModel``, and its exact
    joint N(m, Σ) over (z2, z1, x)."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.A, self.a = torch.randn(BOTTOM, TOP, generator=g), torch.randn(BOTTOM, generator=g)
        self.B, self.C = (
            torch.randn(PIXELS, BOTTOM, generator=g),
            torch.randn(PIXELS, TOP, generator=g),
        )
        self.b = torch.randn(PIXELS, generator=g)
        decoder = SkipDecoder((BOTTOM, TOP), SHAPE, [TOP + BOTTOM], "relu", False)
        decoder.bottom_in, decoder.top_in = nn.Identity(), nn.Identity()
        decoder.net = nn.Sequential(nn.Linear(BOTTOM + TOP, PIXELS))
        model = SkipHierarchicalVAEModel(
            StandardNormalPrior(TOP), decoder, Gaussian(), SHAPE, BOTTOM, [TOP], "relu", False,
            "softplus",
        )  # fmt: skip
        model.conditional = nn.Identity()
        with torch.no_grad():
            decoder.net[0].weight.copy_(torch.cat([self.B, self.C], 1))
            decoder.net[0].bias.copy_(self.b)
            model.bottom_loc.weight.copy_(self.A)
            model.bottom_loc.bias.copy_(self.a)
            model.bottom_scale.weight.zero_()
            model.bottom_scale.bias.fill_(math.log(math.expm1(S)))  # softplus⁻¹(s)
        self.model = model
        # (z2, z1, x) = M ε + m, ε ~ N(0, diag(1, s², σ²))
        eye = torch.eye
        M = torch.zeros(TOP + BOTTOM + PIXELS, TOP + BOTTOM + PIXELS)
        M[:TOP, :TOP] = eye(TOP)
        M[TOP : TOP + BOTTOM, :TOP] = self.A
        M[TOP : TOP + BOTTOM, TOP : TOP + BOTTOM] = eye(BOTTOM)
        M[TOP + BOTTOM :, :TOP] = self.B @ self.A + self.C
        M[TOP + BOTTOM :, TOP : TOP + BOTTOM] = self.B
        M[TOP + BOTTOM :, TOP + BOTTOM :] = eye(PIXELS)
        noise = torch.cat(
            [torch.ones(TOP), S**2 * torch.ones(BOTTOM), SIGMA**2 * torch.ones(PIXELS)]
        )
        # in float64: the conditionals invert blocks of it, which float32 rounds by 1e-3
        self.cov = (M @ torch.diag(noise) @ M.T).double()
        self.mean = torch.cat([torch.zeros(TOP), self.a, self.B @ self.a + self.b]).double()

    def sample(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(n, len(self.mean), generator=g).double()
        draws = self.mean + noise @ torch.linalg.cholesky(self.cov).T
        return draws[:, TOP + BOTTOM :].reshape(n, *SHAPE).float()

    def exact_log_px(self, x):
        x_part = slice(TOP + BOTTOM, None)
        marginal = dist.MultivariateNormal(self.mean[x_part], self.cov[x_part, x_part])
        return marginal.log_prob(x.reshape(-1, PIXELS).double()).float()


def conditional(lg, wanted, given, values, inflate=1.0, shift=0.0):
    """p(coordinates ``wanted`` | coordinates ``given`` = values) of the joint of ``lg`` as a
    MultivariateNormal; ``inflate`` × its covariance and ``shift`` + its mean distort it."""
    m, c = lg.mean, lg.cov
    gain = c[wanted][:, given] @ torch.linalg.inv(c[given][:, given])
    loc = m[wanted] + (values.double() - m[given]) @ gain.T + shift
    cov = c[wanted][:, wanted] - gain @ c[given][:, wanted]
    cov = inflate * (cov + cov.T) / 2  # symmetric to the last bit
    return dist.MultivariateNormal(loc.float(), cov.float())


Z2 = torch.arange(TOP)
Z1 = torch.arange(TOP, TOP + BOTTOM)
X = torch.arange(TOP + BOTTOM, TOP + BOTTOM + PIXELS)


class ExactTop(nn.Module):
    """p(z2 | x), or a distortion of it."""

    def __init__(self, lg, **distort):
        super().__init__()
        self.lg, self.distort, self.latent_dim = lg, distort, TOP

    def posterior(self, x):
        return conditional(self.lg, Z2, X, x.reshape(-1, PIXELS), **self.distort)


class ExactBottom(nn.Module):
    """p(z1 | x, z2), or a distortion of it; z2 may carry particle dimensions."""

    def __init__(self, lg, **distort):
        super().__init__()
        self.lg, self.distort, self.latent_dim = lg, distort, BOTTOM

    def posterior(self, inputs):
        x, z2 = inputs
        x = x.reshape(-1, PIXELS).expand(*z2.shape[:-1], PIXELS)
        given = torch.cat([Z2, X])
        return conditional(self.lg, Z1, given, torch.cat([z2, x], -1), **self.distort)


@pytest.fixture(scope="module")
def lg():
    return LinearSkip()


def test_exact_conditionals_give_every_weight_the_exact_log_likelihood(lg):
    x = lg.sample(30)
    guide = SkipHierarchicalGuide(ExactTop(lg), ExactBottom(lg))
    log_w = log_importance_weights(lg.model, guide, x, 100)
    exact = lg.exact_log_px(x)
    torch.testing.assert_close(log_w, exact.expand_as(log_w), atol=2e-4, rtol=0)
    estimate = importance_log_likelihood(lg.model, guide, x, num_samples=100)
    np.testing.assert_allclose(estimate.log_likelihood, exact.numpy(), atol=2e-4)


def test_a_distorted_guide_is_within_three_standard_errors_of_the_exact_value(lg):
    x = lg.sample(200, seed=2)
    guide = SkipHierarchicalGuide(
        ExactTop(lg, inflate=1.6, shift=0.2), ExactBottom(lg, inflate=1.4, shift=-0.1)
    )
    estimate = importance_log_likelihood(lg.model, guide, x, num_samples=2000)
    error = estimate.log_likelihood - lg.exact_log_px(x).numpy()
    assert abs(error.mean()) < 3 * error.std(ddof=1) / math.sqrt(len(error)) + 1e-3
    assert estimate.summary["gap"] > 0.05  # the distortion costs the ELBO measurably


def test_log_weights_cover_both_layers_and_the_decoder_reads_both():
    """log w = log p(z2) + log p(z1|z2) + log p(x|z1,z2) - log q(z2|x) - log q(z1|x,z2)."""
    model, guide = build_vae(skip_config(prior="vamp", prior_components=4), (1, 8, 8))
    x = torch.rand(4, 1, 8, 8).round()
    log_w, (z2, z1) = one_weight_and_its_draw(model, guide, x, ("z2", "z1"))
    by_hand = (
        model.prior((4,)).log_prob(z2)
        + model.bottom(z2).log_prob(z1)
        + model.likelihood(model.decoder((z1, z2))).log_prob(x)
        - guide.top.posterior(x).log_prob(z2)
        - guide.bottom.posterior((x, z2)).log_prob(z1)
    )
    torch.testing.assert_close(log_w, by_hand.detach(), rtol=1e-5, atol=1e-4)
    # p(x | z1, z2) changes with z2 at fixed z1: the skip connection is there
    other = model.likelihood(model.decoder((z1, z2 + 1))).log_prob(x)
    assert not torch.allclose(other, model.likelihood(model.decoder((z1, z2))).log_prob(x))


def test_importance_sampling_agrees_with_brute_force_sampling_from_the_prior():
    """log p(x) = log E_{p(z2) p(z1|z2)} p(x|z1,z2): 400,000 prior draws estimate it on a
    model with 4 pixels without any guide. The guide is first fitted to the two images
    (an untrained one makes the estimate's tails too heavy for K = 5000 to settle)."""
    config = skip_config(latent_dim=1, top_latent_dim=1, hidden_dims=[8])
    model, guide = build_vae(config, (1, 2, 2))
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]).reshape(2, 1, 2, 2)
    elbo = pyro.infer.Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    for _ in range(200):
        svi.step(x)
    estimate = importance_log_likelihood(model, guide, x, num_samples=5000)
    with torch.no_grad():
        z2 = model.prior(()).sample((400_000,))
        z1 = model.bottom(z2).sample()
        log_px_given_z = model.likelihood(model.decoder((z1, z2))).log_prob(x[:, None])
    brute = (torch.logsumexp(log_px_given_z, 1) - math.log(400_000)).numpy()
    np.testing.assert_allclose(estimate.log_likelihood, brute, atol=0.01)


def test_trains_round_trips_through_its_checkpoint_and_bounds_are_ordered(tmp_path):
    run = train(
        skip_config(epochs=3, prior="vamp", prior_components=5),
        run_dir=tmp_path / "run",
        progress=False,
    )
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"] + 5
    estimate = log_likelihood(run, num_samples=200, max_images=40)
    assert np.isfinite(estimate.log_likelihood).all()
    assert estimate.summary["log_likelihood"] >= estimate.summary["elbo"]
    loaded = load_run(run.run_dir)
    assert evaluate(loaded) == run.test_elbo
    for part in ("model", "guide"):
        ours, theirs = getattr(run, part).state_dict(), getattr(loaded, part).state_dict()
        assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    report = visualize(run, num_pairs=2, max_dims=3)
    assert report.exists() and (tmp_path / "run" / "viz" / "traversals.png").exists()


def test_conv_networks_are_refused_naming_the_choice():
    with pytest.raises(
        UserInputError, match=r"--model hvae-skip builds MLP networks; --encoder conv"
    ):
        build_vae(skip_config(encoder="conv"), (1, 8, 8))
