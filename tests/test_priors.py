"""Each prior is a normalized density whose samples match its moments."""

import pyro.distributions as dist
import pytest
import torch
from pyro_vae.guides import MLPEncoder, ZukoFlowPrior
from pyro_vae.models import (
    FlowPrior,
    LearnedNormalPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
)
from torch import nn

from pyro_vae import build_vae
from pyro_vae.config import TrainConfig
from pyro_vae.registry import lookup


def perturbed(prior: nn.Module) -> nn.Module:
    """The prior with its learnable parameters moved off their initial values."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in prior.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return prior


def make_prior(name: str, dim: int) -> nn.Module:
    torch.manual_seed(0)
    if name == "vamp":
        guide = lookup("guide", "diag-normal")(
            TrainConfig(), MLPEncoder((1, 2, 2), [8], "tanh"), dim
        )
        return perturbed(VampPrior(dim, guide.posterior, (1, 2, 2), 3))
    return perturbed(
        {
            "standard-normal": lambda: StandardNormalPrior(dim),
            "learned-normal": lambda: LearnedNormalPrior(dim),
            "mog": lambda: MixtureOfGaussiansPrior(dim, 3),
            "flow": lambda: FlowPrior(dim, 2, [8]),
            "zuko-nsf": lambda: ZukoFlowPrior(dim, 2, [8]),
        }[name]()
    )


PRIORS = ["standard-normal", "learned-normal", "mog", "vamp", "flow", "zuko-nsf"]


def grid(dim: int, half_width: float = 9.0, points: int = 601):
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    step = axis[1] - axis[0]
    if dim == 1:
        return axis[:, None], step
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([a.flatten(), b.flatten()], -1), step**2


@pytest.mark.parametrize("name", PRIORS)
@pytest.mark.parametrize("dim", [1, 2])
def test_density_integrates_to_one_and_samples_match_its_moments(name, dim):
    if name in ("flow", "zuko-nsf") and dim == 1:
        pytest.skip("an autoregressive flow needs at least two dimensions")
    prior = make_prior(name, dim)
    z, cell = grid(dim, points=601 if dim == 1 else 241)
    with torch.no_grad():
        density = prior(()).log_prob(z.float()).double().exp()
        mass = (density * cell).sum().item()
        mean = (density[:, None] * z * cell).sum(0)
        second = (density[:, None] * z**2 * cell).sum(0)
        draws = prior(()).sample((40_000,)).double()
    assert mass == pytest.approx(1.0, abs=2e-3)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.04, rtol=0)
    torch.testing.assert_close(draws.pow(2).mean(0), second, atol=0.1, rtol=0.05)


def test_vamp_gradients_reach_the_pseudo_inputs_and_the_encoder():
    config = TrainConfig(prior="vamp", prior_components=5, latent_dim=3, hidden_dims=[16])
    model, guide = build_vae(config, (1, 8, 8))
    z = torch.randn(7, 3)
    model.prior((7,)).log_prob(z).sum().backward()
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0
    assert guide.encoder.net[0].weight.grad.abs().sum() > 0
    # The guide is not a submodule of the model: each parameter has one owner and one name.
    model_params = {id(p) for p in model.parameters()}
    assert not model_params & {id(p) for p in guide.parameters()}


def test_hardtanh_pseudo_inputs_are_the_clamped_weights_and_the_density_follows():
    """--pseudo-inputs hardtanh (the VampPrior authors' code): u = min(max(w, 0), 1), w from
    0.05 ± 0.01; p(z) is exactly the free prior's at the clamped inputs, and a pixel pushed
    past a bound passes no gradient back to its weight."""
    config = TrainConfig(
        prior="vamp", prior_components=400, latent_dim=3, hidden_dims=[16], pseudo_inputs="hardtanh"
    )
    model, guide = build_vae(config, (1, 8, 8))
    w = model.prior.pseudo_inputs
    assert abs(w.mean().item() - 0.05) < 2e-3 and abs(w.std().item() - 0.01) < 2e-3
    with torch.no_grad():
        w.mul_(40).sub_(1.5)  # 0.05 ± 0.01 -> 0.5 ± 0.4: some pixels below 0, some above 1
    u = model.prior.inputs()
    assert u.min() == 0 and u.max() == 1 and (w < 0).any() and (w > 1).any()
    torch.testing.assert_close(u, w.detach().clamp(0, 1))

    free, _ = build_vae(TrainConfig(**{**config.to_dict(), "pseudo_inputs": "free"}), (1, 8, 8))
    free.prior._components = model.prior._components  # the same guide scores both
    with torch.no_grad():
        free.prior.pseudo_inputs.copy_(u)
    z = torch.randn(11, 3)
    torch.testing.assert_close(model.prior((11,)).log_prob(z), free.prior((11,)).log_prob(z))
    # ... and by hand: log (1/K) Σ_k q(z | u_k).
    q = guide.posterior(u.detach())
    by_hand = torch.logsumexp(q.log_prob(z[:, None, :]), -1) - torch.log(torch.tensor(400.0))
    torch.testing.assert_close(model.prior((11,)).log_prob(z), by_hand)

    model.prior((11,)).log_prob(z).sum().backward()
    inside = (w > 0) & (w < 1)
    assert (w.grad[~inside] == 0).all() and w.grad[inside].abs().sum() > 0


def test_flow_prior_scores_without_inverting():
    prior = FlowPrior(6, 2, [16])
    z = torch.randn(500, 6)
    log_p = prior((500,)).log_prob(z)
    assert log_p.shape == (500,) and torch.isfinite(log_p).all()


def test_standard_normal_density_equals_the_general_normal_and_keeps_its_kl():
    from pyro_vae.models.priors import StandardNormal

    loc, scale = torch.zeros(3), torch.ones(3)
    ours, general = StandardNormal(loc, scale).expand((4, 3)), dist.Normal(loc, scale)
    z = torch.randn(5, 4, 3) * 3
    torch.testing.assert_close(ours.log_prob(z), general.log_prob(z))
    assert ours.log_prob(torch.randn(3)).shape == (4, 3)  # broadcast to the batch shape
    q = dist.Normal(torch.randn(4, 3), torch.rand(4, 3) + 0.1)
    torch.testing.assert_close(
        torch.distributions.kl_divergence(q, ours), torch.distributions.kl_divergence(q, general)
    )


def _broadcast_mixture_log_prob(loc, scale, logits, z):
    """Pyro's MixtureSameFamily: every code broadcast against every component."""
    mixture = dist.MixtureSameFamily(
        dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1)
    )
    return mixture.log_prob(z)


def test_diagonal_normal_mixture_equals_the_broadcast_value_and_gradients():
    from pyro_vae.models.priors import _mixture

    torch.manual_seed(0)
    components, dim = 30, 5
    params = [
        torch.randn(components, dim, dtype=torch.float64),
        torch.rand(components, dim, dtype=torch.float64) + 0.05,
        torch.randn(components, dtype=torch.float64),
        torch.randn(4, 6, dim, dtype=torch.float64) * 2,
    ]
    values, grads = [], []
    for score in (
        lambda loc, scale, logits, z: _mixture(
            dist.Normal(loc, scale).to_event(1), logits, (6,)
        ).log_prob(z),
        _broadcast_mixture_log_prob,
    ):
        leaves = [p.clone().requires_grad_() for p in params]
        log_p = score(*leaves)
        values.append(log_p)
        grads.append(torch.autograd.grad(log_p.sum(), leaves))
    assert values[0].shape == (4, 6)
    torch.testing.assert_close(values[0], values[1], rtol=0, atol=1e-10)
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)


def test_diagonal_normal_mixture_in_float32_stays_exact_where_the_terms_cancel():
    """Codes a hair from a narrow component far from the origin: z²σ⁻² and μ²σ⁻² are
    ~10⁵ and cancel; the float64 expansion keeps the float32 answer within 1e-4 nats."""
    from pyro_vae.models.priors import _mixture

    torch.manual_seed(1)
    loc = 3 + torch.randn(40, 8, dtype=torch.float64)
    scale = torch.full((40, 8), 0.01, dtype=torch.float64)
    logits = torch.zeros(40, dtype=torch.float64)
    z = loc[:10] + 0.01 * torch.randn(10, 8, dtype=torch.float64)
    exact = _broadcast_mixture_log_prob(loc, scale, logits, z)
    ours = _mixture(dist.Normal(loc.float(), scale.float()).to_event(1), logits.float(), (10,))
    torch.testing.assert_close(ours.log_prob(z.float()).double(), exact, rtol=0, atol=1e-4)


def test_mixture_with_components_that_vary_over_the_batch_takes_the_broadcast():
    from pyro_vae.models.priors import _Mixture, _shared_diagonal_normal

    loc, scale = torch.randn(3, 4, 2), torch.rand(3, 4, 2) + 0.1
    components = dist.Normal(loc, scale).to_event(1)
    assert _shared_diagonal_normal(components) is None
    z = torch.randn(3, 2)
    mixture = _Mixture(dist.Categorical(logits=torch.zeros(3, 4)), components)
    torch.testing.assert_close(
        mixture.log_prob(z), _broadcast_mixture_log_prob(loc, scale, torch.zeros(3, 4), z)
    )
