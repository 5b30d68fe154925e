import pyro.distributions as dist
import pytest
import torch

from models import BernoulliImage, BernoulliLikelihood
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
