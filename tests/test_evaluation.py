"""elbo_terms: the ELBO and its reconstruction and KL terms, against exact answers."""

import pyro
import pytest
import torch

from pyro_vae.evaluation import EVAL_SEED, elbo_terms, fixed_seed
from pyro_vae.pairs import TensorData
from tests.linear_gaussian import LATENT, GaussianGuide, LinearGaussian


@pytest.fixture(scope="module")
def lg():
    return LinearGaussian()


def as_data(x: torch.Tensor) -> TensorData:
    labels = torch.full((x.shape[0],), -1)
    return TensorData("linear-gaussian", "none", x, x[:0], x, labels, labels[:0], labels)


def test_under_the_exact_posterior_the_elbo_is_log_px_and_the_kl_term_is_the_kl(lg):
    x = lg.sample(400)
    terms = elbo_terms(lg.model, GaussianGuide(lg), as_data(x), batch_size=128)
    # log p(x, z) - log q(z|x) = log p(x) for every z: the ELBO is exact, draw for draw.
    assert terms["elbo"] == pytest.approx(lg.exact_log_px(x).mean().item(), abs=1e-4)
    assert terms["reconstruction"] - terms["kl"] == pytest.approx(terms["elbo"], abs=1e-6)
    # The KL term's one-draw estimate against KL(N(m, Σ) || N(0, I)) in closed form.
    mean = lg.posterior_mean(x)
    _, logdet = torch.linalg.slogdet(lg.cov_post)
    kl = 0.5 * (lg.cov_post.trace() + (mean**2).sum(-1) - LATENT - logdet)
    assert terms["kl"] == pytest.approx(kl.mean().item(), abs=0.3)  # ~4 standard errors


def test_the_elbo_is_pyro_trace_elbo_on_the_same_draw(lg):
    x = lg.sample(100, seed=3)
    guide = GaussianGuide(lg, cov=2.0 * lg.cov_post, shift=0.3, diagonal=True)
    with fixed_seed(EVAL_SEED, x.device):
        loss = pyro.infer.Trace_ELBO().loss(lg.model, guide, x)
    whole = elbo_terms(lg.model, guide, as_data(x), batch_size=100)
    assert whole["elbo"] == pytest.approx(-loss / 100, rel=1e-6)
    # Batching changes nothing but the order of the draws' use: same mean within MC error.
    batched = elbo_terms(lg.model, guide, as_data(x), batch_size=7)
    assert batched["elbo"] == pytest.approx(-loss / 100, abs=0.5)
