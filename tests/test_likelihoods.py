import math

import pyro.distributions as dist
import pytest
import torch
from pyro_vae.models import BernoulliImage, BernoulliLikelihood

from pyro_vae.errors import UserInputError


def test_bernoulli_image_matches_independent_bernoulli():
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(5, 3, 1, 4, 4, generator=generator)
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.4), generator=generator)
    reference = dist.Bernoulli(logits=logits).to_event(3).log_prob(x)
    ours = BernoulliImage(logits)
    assert ours.batch_shape == (5, 3) and ours.event_shape == (1, 4, 4)
    torch.testing.assert_close(ours.log_prob(x), reference)
    # By hand: sum over pixels of x log σ(l) + (1 - x) log(1 - σ(l)).
    p = torch.sigmoid(logits.double())
    by_hand = (x * p.log() + (1 - x) * (1 - p).log()).flatten(-3).sum(-1)
    torch.testing.assert_close(ours.log_prob(x).double(), by_hand, rtol=1e-5, atol=1e-4)
    # Both forms: x broadcast to the particles (batched product) and x matching the logits
    # pixel for pixel (cross-entropy kernel), with their gradients.
    logits.requires_grad_(True)
    shared = BernoulliImage(logits).log_prob(x)
    matched = BernoulliImage(logits).log_prob(x.expand_as(logits))
    torch.testing.assert_close(shared, matched)
    (shared_grad,) = torch.autograd.grad(shared.sum(), logits)
    (matched_grad,) = torch.autograd.grad(matched.sum(), logits)
    torch.testing.assert_close(shared_grad, matched_grad)


def test_bernoulli_image_sampling_and_expand():
    logits = torch.tensor([-3.0, 0.0, 3.0]).reshape(1, 1, 3).expand(2, 1, 1, 3)
    d = BernoulliImage(logits)
    draws = d.sample((4000,))
    assert draws.shape == (4000, 2, 1, 1, 3)
    torch.testing.assert_close(draws.mean(0), d.mean.expand(2, 1, 1, 3), atol=0.03, rtol=0)
    assert d.expand((7, 2)).batch_shape == (7, 2)
    assert d.expand((7, 2)).log_prob(draws[0]).shape == (7, 2)


def test_validation_refuses_grey_values():
    d = BernoulliImage(torch.zeros(1, 1, 2, 2), validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.full((1, 1, 2, 2), 0.5))


def test_likelihood_support_check():
    likelihood = BernoulliLikelihood()
    likelihood.check_support(torch.tensor([0, 127, 255], dtype=torch.uint8), "dynamic")
    with pytest.raises(UserInputError, match="1 pixels are grey"):
        likelihood.check_support(torch.tensor([0, 127, 255], dtype=torch.uint8), "none")


def reference_log_probs(x, params):
    """Each likelihood's log-probability computed independently, in float64, by its formula."""
    import math

    p = params.double()
    xd = x.double()
    lam = torch.sigmoid(p)
    # continuous Bernoulli: log C(λ) + x log λ + (1-x) log(1-λ), C(λ) = 2 artanh(1-2λ)/(1-2λ)
    log_c = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
    cb = log_c + xd * torch.log(lam) + (1 - xd) * torch.log1p(-lam)
    gauss = -0.5 * ((xd - p) / 0.1) ** 2 - math.log(0.1) - 0.5 * math.log(2 * math.pi)
    laplace = -(xd - p).abs() / 0.1 - math.log(2 * 0.1)
    return {
        k: v.flatten(-3).sum(-1)
        for k, v in {"continuous-bernoulli": cb, "gaussian": gauss, "laplace": laplace}.items()
    }


@pytest.mark.parametrize("name", ["continuous-bernoulli", "gaussian", "laplace"])
def test_continuous_likelihoods_match_their_formulas(name):
    from pyro_vae.config import TrainConfig
    from pyro_vae.registry import lookup

    generator = torch.Generator().manual_seed(0)
    params = torch.randn(4, 1, 3, 3, generator=generator)
    x = torch.rand(4, 1, 3, 3, generator=generator)
    likelihood = lookup("likelihood", name)(TrainConfig(likelihood_scale=0.1), (1, 3, 3))
    ours = likelihood(params).log_prob(x).double()
    torch.testing.assert_close(ours, reference_log_probs(x, params)[name], rtol=1e-4, atol=1e-3)


def test_learned_gaussian_scale_is_a_parameter():
    from pyro_vae.models import LearnedGaussianLikelihood

    likelihood = LearnedGaussianLikelihood((1, 2, 2), 0.5)
    loc, x = torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2)
    reference = dist.Normal(0.0, 0.5).log_prob(torch.tensor(1.0)) * 4
    torch.testing.assert_close(likelihood(loc).log_prob(x), reference.expand(3))
    likelihood(loc).log_prob(x).sum().backward()
    assert likelihood.log_scale.grad.abs().sum() > 0


def test_discretized_logistic_is_a_distribution_over_256_levels():
    from pyro_vae.models import DiscretizedLogistic

    levels = torch.arange(256.0) / 255
    for loc, log_scale in [(0.3, -3.0), (0.0, -1.0), (1.2, -5.0), (0.5, -7.0)]:
        d = DiscretizedLogistic(
            torch.full((256, 1, 1, 1), loc), torch.full((256, 1, 1, 1), log_scale)
        )
        probs = d.log_prob(levels.reshape(256, 1, 1, 1)).exp()
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-3)
        # An interior bin by hand: σ((x + h - μ)/s) - σ((x - h - μ)/s)
        s, x, h = math.exp(log_scale), levels[100].item(), 1 / 510
        by_hand = torch.sigmoid(torch.tensor((x + h - loc) / s)) - torch.sigmoid(
            torch.tensor((x - h - loc) / s)
        )
        assert probs[100].item() == pytest.approx(by_hand.item(), rel=2e-2, abs=1e-7)
    draws = DiscretizedLogistic(torch.full((1, 1, 1), 0.4), torch.full((1, 1, 1), -3.0)).sample(
        (5000,)
    )
    assert torch.allclose(draws * 255, (draws * 255).round())
    assert abs(draws.mean().item() - 0.4) < 0.01
