import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_vae import train
from pyro_vae.importance import log_importance_weights
from pyro_vae.objectives import (
    IWAE_ELBO,
    STL_ELBO,
    DReG_IWAE_ELBO,
    LatentScale,
    analytic_kl_pairs,
    warmup_beta,
)
from tests.conftest import small_config
from tests.linear_gaussian import GaussianGuide, LinearGaussian


@pytest.fixture(scope="module")
def lg():
    return LinearGaussian()


def mean_loss(elbo, model, guide, x, repeats=200):
    return sum(elbo.loss(model, guide, x) for _ in range(repeats)) / repeats


def test_iwae_with_one_particle_is_the_elbo(lg):
    x = lg.sample(50)
    guide = GaussianGuide(lg, cov=1.5 * lg.cov_post, diagonal=True)
    pyro.set_rng_seed(0)
    iwae = IWAE_ELBO(num_particles=1).loss(lg.model, guide, x)
    pyro.set_rng_seed(0)
    elbo = pyro.infer.Trace_ELBO().loss(lg.model, guide, x)
    assert iwae == pytest.approx(elbo, rel=1e-5)


def test_iwae_bound_lies_between_the_elbo_and_log_px(lg):
    x = lg.sample(100, seed=2)
    guide = GaussianGuide(lg, cov=0.5 * lg.cov_post, shift=0.2, diagonal=True)
    elbo = -mean_loss(pyro.infer.Trace_ELBO(), lg.model, guide, x, 50)
    iwae = -mean_loss(IWAE_ELBO(num_particles=20), lg.model, guide, x, 50)
    exact = lg.exact_log_px(x).sum().item()
    assert elbo < iwae < exact
    # With the exact posterior as guide every bound is log p(x) itself.
    tight = -IWAE_ELBO(num_particles=5).loss(lg.model, GaussianGuide(lg), x)
    assert tight == pytest.approx(exact, abs=1e-3)


def test_iwae_agrees_with_pyro_renyi_alpha_zero(lg):
    x = lg.sample(64, seed=3)
    guide = GaussianGuide(lg, cov=0.5 * lg.cov_post, shift=0.2, diagonal=True)
    renyi = pyro.infer.RenyiELBO(
        alpha=0, num_particles=10, vectorize_particles=True, max_plate_nesting=1
    )
    ours = [IWAE_ELBO(num_particles=10).loss(lg.model, guide, x) for _ in range(100)]
    pyros = [renyi.loss(lg.model, guide, x) for _ in range(100)]
    difference = torch.tensor(ours).mean() - torch.tensor(pyros).mean()
    spread = (torch.tensor(ours).var() / 100 + torch.tensor(pyros).var() / 100).sqrt()
    assert abs(difference) < 4 * spread
    # One joint weight per minibatch (what Importance and vectorized_importance_weights
    # form) gains almost nothing over the ELBO for 64 images; per data point gains a lot.
    log_w = log_importance_weights(lg.model, guide, x, 10)
    joint = (torch.logsumexp(log_w.sum(1), 0) - math.log(10)).item()
    per_datapoint = (torch.logsumexp(log_w, 0) - math.log(10)).sum().item()
    elbo = log_w.mean(0).sum().item()
    assert per_datapoint - elbo > 10 * (joint - elbo)


def test_iwae_gradients_flow_to_the_guide(lg):
    from pyro_vae.guides import MLPEncoder

    from pyro_vae.config import TrainConfig
    from pyro_vae.registry import lookup

    encoder = MLPEncoder((1, 1, 6), [8], "softplus")
    guide = lookup("guide", "diag-normal")(TrainConfig(), encoder, 3)
    loss = IWAE_ELBO(num_particles=4)(lg.model, guide)(lg.sample(10))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in guide.parameters())


def test_latent_scale_weights_only_the_kl_term(lg):
    x = lg.sample(30, seed=4)
    guide = GaussianGuide(lg, cov=2.0 * lg.cov_post, diagonal=True)

    def loss(beta):
        pyro.set_rng_seed(0)
        scale = LatentScale(beta)
        return pyro.infer.Trace_ELBO().loss(scale(lg.model), scale(guide), x)

    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(lg.model, trace=guide_trace)).get_trace(x)
    log_px_given_z = model_trace.nodes["x"]["fn"].log_prob(x).sum().item()
    kl = (
        guide_trace.log_prob_sum()
        - model_trace.nodes["z"]["fn"].log_prob(model_trace.nodes["z"]["value"]).sum()
    ).item()
    for beta in (0.1, 0.5, 1.0):
        assert loss(beta) == pytest.approx(-log_px_given_z + beta * kl, rel=1e-5)
    with pytest.raises(ValueError, match="beta must be > 0"):
        LatentScale(1.0).beta = 0.0


def test_warmup_schedule():
    assert [warmup_beta(e, 4) for e in (1, 2, 3, 4, 5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_beta(1, 0) == 1.0


def test_kl_warmup_is_recorded_and_trains(tmp_path):
    run = train(small_config(epochs=3, kl_warmup_epochs=3), run_dir=tmp_path / "r", progress=False)
    assert [row["kl_weight"] for row in run.history] == [None, 1 / 3, 2 / 3, 1.0]
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"] + 10


def test_iwae_objective_trains(tmp_path):
    config = small_config(epochs=2, elbo="iwae", num_particles=5)
    run = train(config, run_dir=tmp_path / "r", progress=False)
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"] + 10


def test_meanfield_says_once_where_no_closed_form_kl_exists(tmp_path, recwarn):
    train(small_config(epochs=1, elbo="meanfield"), run_dir=tmp_path / "a", progress=False)
    assert not [w for w in recwarn if "closed-form KL" in str(w.message)]
    with pytest.warns(UserWarning, match="no closed-form KL between the FlowGuide guide"):
        config = small_config(epochs=1, elbo="meanfield", guide="iaf", flow_hidden_dims=[16])
        train(config, run_dir=tmp_path / "b", progress=False)


def test_analytic_kl_pairs(lg):
    x = lg.sample(4)
    assert analytic_kl_pairs(lg.model, GaussianGuide(lg, diagonal=True), x) == {"z": True}
    assert math.isfinite(IWAE_ELBO(2).loss(lg.model, GaussianGuide(lg), x))


# ---------------------------------------------------------------------------------------------
# Gradient estimators beyond Pyro's: STL (Roeder et al. 2017) and DReG (Tucker et al. 2019)


class LearnedGaussianGuide(torch.nn.Module):
    """q_φ(z|x) = N(Mx + c, LLᵀ) with M, c, L learned: a family that holds the exact
    posterior of the linear-Gaussian model (set by :meth:`set_exact`)."""

    def __init__(self, lg, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        pixels, latent = lg.W.shape
        self.M = torch.nn.Parameter(0.3 * torch.randn(pixels, latent, generator=generator))
        self.c = torch.nn.Parameter(0.3 * torch.randn(latent, generator=generator))
        self.L = torch.nn.Parameter(torch.eye(latent) * 0.6)

    def set_exact(self, lg):
        with torch.no_grad():
            self.M.copy_(lg.W @ lg.cov_post.T / 0.5**2)
            self.c.copy_(-lg.b @ self.M)
            self.L.copy_(torch.linalg.cholesky(lg.cov_post))
        return self

    def forward(self, x):
        loc = x.reshape(x.shape[0], -1) @ self.M + self.c
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=torch.tril(self.L)))


def gradients(elbo, lg, guide, x, seed):
    """(guide gradient, decoder gradient) of one draw, flattened."""
    params = list(guide.parameters()) + list(lg.model.parameters())
    pyro.set_rng_seed(seed)
    with pyro.validation_enabled(False):
        grads = torch.autograd.grad(elbo.differentiable_loss(lg.model, guide, x), params)
    n_guide = len(list(guide.parameters()))
    flat = [torch.cat([g.reshape(-1) for g in part]) for part in (grads[:n_guide], grads[n_guide:])]
    return flat[0], flat[1]


def draws(elbo, lg, guide, x, n, offset=0):
    pairs = [gradients(elbo, lg, guide, x, offset + i) for i in range(n)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


@pytest.fixture(scope="module")
def learnable(lg):
    for p in lg.model.parameters():
        p.requires_grad_(True)
    return LearnedGaussianGuide(lg), lg.sample(3, seed=5)


@pytest.mark.parametrize(
    "estimator, plain",
    [
        (lambda: DReG_IWAE_ELBO(5), lambda: IWAE_ELBO(5)),
        (lambda: STL_ELBO(5), lambda: STL_PLAIN(5)),
    ],
    ids=["iwae-dreg", "stl"],
)
def test_new_estimators_are_unbiased_and_leave_the_decoder_gradient_alone(
    lg, learnable, estimator, plain
):
    guide, x = learnable
    ours, theirs = estimator(), plain()
    # Same draws: the decoder's gradient is the plain estimator's, draw for draw.
    for seed in range(3):
        assert torch.allclose(
            gradients(ours, lg, guide, x, seed)[1], gradients(theirs, lg, guide, x, seed)[1],
            rtol=1e-5, atol=1e-5,
        )  # fmt: skip
    # Independent draws: the guide's mean gradients agree within Monte Carlo error.
    n = 1500
    a, _ = draws(ours, lg, guide, x, n)
    b, _ = draws(theirs, lg, guide, x, n, offset=10_000)
    varying = (a.var(0) + b.var(0)) > 0  # L's upper triangle is no parameter of q
    z = (a.mean(0) - b.mean(0))[varying] / (a.var(0) / n + b.var(0) / n)[varying].sqrt()
    assert z.abs().max() < 4.5, z
    assert a.var(0).sum() < b.var(0).sum(), "no variance reduction for the guide"


class STL_PLAIN(IWAE_ELBO):  # noqa: N801
    """The ELBO STL_ELBO estimates, with the plain (score-keeping) reparameterized gradient."""

    def differentiable_loss(self, model, guide, x):
        return -log_importance_weights(model, guide, x, self.num_particles).mean(0).sum()


def snr(grads):
    return (grads.mean(0).abs() / grads.std(0)).nanmedian().item()  # L: upper triangle 0/0


def test_dreg_snr_rises_with_k_where_plain_iwae_falls(lg):
    # Rainforth et al. 2018: the IWAE guide gradient's SNR falls as O(1/√K); DReG's rises
    # (Tucker et al. 2019). Seen here once K is large enough for the asymptotic regime.
    guide, x = LearnedGaussianGuide(lg), lg.sample(1, seed=5)
    n = 300
    iwae = [snr(draws(IWAE_ELBO(k), lg, guide, x, n)[0]) for k in (256, 2048)]
    dreg = [snr(draws(DReG_IWAE_ELBO(k), lg, guide, x, n)[0]) for k in (256, 2048)]
    assert iwae[1] < 0.5 * iwae[0]
    assert dreg[1] > dreg[0]
    assert dreg[1] > 5 * iwae[1]


@pytest.mark.parametrize("estimator", [lambda: STL_ELBO(3), lambda: DReG_IWAE_ELBO(3)])
def test_at_the_exact_posterior_the_guide_gradient_vanishes_draw_for_draw(lg, estimator):
    guide = LearnedGaussianGuide(lg).set_exact(lg)
    x = lg.sample(4, seed=7)
    for seed in range(5):
        ours, _ = gradients(estimator(), lg, guide, x, seed)
        assert ours.abs().max() < 1e-3
    plain, _ = gradients(STL_PLAIN(3), lg, guide, x, 0)
    assert plain.abs().max() > 1e-2  # the score term is there, zero only on average


def test_flows_without_an_inverse_are_refused_with_one_message(tmp_path):
    from pyro_vae import UserInputError

    with pytest.raises(UserInputError, match="planar and radial flows have no inverse"):
        train(small_config(guide="planar", elbo="iwae-dreg", epochs=1), run_dir=tmp_path / "r")


@pytest.mark.parametrize("elbo", ["stl", "iwae-dreg"])
def test_new_estimators_train_with_the_registry_guides(tmp_path, elbo):
    for guide in ("diag-normal", "iaf"):
        run = train(
            small_config(guide=guide, elbo=elbo, num_particles=3, epochs=1),
            run_dir=tmp_path / f"{guide}",
            progress=False,
        )
        assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"] + 5


def test_dreg_equals_tuckers_formula_written_out_by_hand(lg):
    """-Σ w̃² log w with q's parameters held fixed in log q (Tucker et al. 2019, eq. 8), on
    the draws the Pyro program makes."""
    from tests.linear_gaussian import SIGMA

    guide, x, k = LearnedGaussianGuide(lg), lg.sample(3, seed=5), 4
    ours, _ = gradients(DReG_IWAE_ELBO(k), lg, guide, x, 11)
    pyro.set_rng_seed(11)
    loc = x.reshape(3, -1) @ guide.M + guide.c
    scale_tril = torch.tril(guide.L)
    z = dist.MultivariateNormal(loc, scale_tril=scale_tril).expand((k, 3)).rsample()
    fixed_q = dist.MultivariateNormal(loc.detach(), scale_tril=scale_tril.detach())
    decoded = z @ lg.W.T + lg.b
    log_p = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_p = log_p + dist.Normal(decoded, SIGMA).log_prob(x.reshape(3, -1)).sum(-1)
    log_w = log_p - fixed_q.log_prob(z)
    weights = torch.softmax(log_w.detach(), 0)
    by_hand = torch.autograd.grad(-(weights**2 * log_w).sum(), list(guide.parameters()))
    assert torch.allclose(ours, torch.cat([g.reshape(-1) for g in by_hand]), atol=1e-4, rtol=1e-5)


def test_beta_weights_the_kl_term_and_warm_up_rises_to_it():
    assert [warmup_beta(e, 2, 4.0) for e in (1, 2, 3)] == [2.0, 4.0, 4.0]
    assert warmup_beta(7, 0, 0.5) == 0.5


def test_a_large_beta_collapses_the_posterior(tmp_path):
    runs = {
        beta: train(
            small_config(epochs=15, lr=1e-2, beta=beta),
            run_dir=tmp_path / str(beta),
            progress=False,
        )
        for beta in (1.0, 8.0)
    }
    assert [row["kl_weight"] for row in runs[8.0].history] == [None] + [8.0] * 15
    kl = {beta: run.history[-1]["valid_kl"] for beta, run in runs.items()}
    # On the digits the KL term first collapses and then grows back (to 1.4 nats at β = 1);
    # at β = 8 it stays at zero.
    assert kl[1.0] > 0.5 and abs(kl[8.0]) < 0.25 * kl[1.0]
    for row in runs[1.0].history:  # the terms are recorded for every epoch and sum up
        assert row["valid_reconstruction"] - row["valid_kl"] == pytest.approx(row["valid_elbo"])


def test_one_latent_site_is_scored_at_the_fixed_code_without_running_the_guide_again(lg):
    """The shortcut (the site's own distribution scores the detached code) equals what
    replaying the guide on the detached code gives, value and gradient."""
    from pyro_vae.importance import particle_traces, site_log_probs
    from pyro_vae.objectives import _fixed_code_log_q

    guide, x, k = LearnedGaussianGuide(lg), lg.sample(6, seed=7), 3
    pyro.set_rng_seed(0)
    _, guide_trace = particle_traces(lg.model, guide, x, k)
    shortcut = _fixed_code_log_q(guide, guide_trace, x, k)
    fixed = guide_trace.copy()
    fixed.nodes["z"] = {**guide_trace.nodes["z"], "value": guide_trace.nodes["z"]["value"].detach()}
    with pyro.plate("particles", k, dim=-2):
        replayed = poutine.trace(poutine.replay(guide, trace=fixed)).get_trace(x)
    replay = site_log_probs(replayed, "guide")
    assert shortcut.shape == (k, 6)
    torch.testing.assert_close(shortcut, replay)
    for a, b in zip(
        torch.autograd.grad(shortcut.sum(), list(guide.parameters())),
        torch.autograd.grad(replay.sum(), list(guide.parameters())),
    ):
        torch.testing.assert_close(a, b)
