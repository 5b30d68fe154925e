import pytest
import torch
from pyro_vae.models import StandardNormalPrior

from pyro_vae import REGISTRY, UserInputError, build_vae, register, train
from pyro_vae.registry import lookup
from tests.conftest import small_config


def test_every_kind_has_its_default():
    config = small_config()
    for kind in ("prior", "likelihood", "decoder", "encoder", "guide", "elbo"):
        assert getattr(config, kind) in REGISTRY[kind]


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(
        UserInputError, match="unknown prior 'vampire'; valid prior names: standard"
    ):
        lookup("prior", "vampire")


def test_build_vae_shapes():
    model, guide = build_vae(small_config(latent_dim=5), (1, 8, 8))
    x = torch.zeros(3, 1, 8, 8)
    assert guide.posterior(x).event_shape == (5,)
    assert model.decoder(torch.zeros(3, 5)).shape == (3, 1, 8, 8)


class ScaledNormalPrior(StandardNormalPrior):
    """A user's own prior, N(0, 2² I), added through the Python API."""

    def __init__(self, latent_dim):
        super().__init__(latent_dim)
        self.scale.fill_(2.0)


def test_registered_entry_is_used_by_name(tmp_path):
    register("prior", "scaled-normal", lambda config, dim, posterior, shape: ScaledNormalPrior(dim))
    try:
        run = train(small_config(prior="scaled-normal"), run_dir=tmp_path / "r", progress=False)
        assert isinstance(run.model.prior, ScaledNormalPrior)
        assert torch.all(run.model.prior.scale == 2.0)
    finally:
        del REGISTRY["prior"]["scaled-normal"]


def test_register_refuses_an_unknown_kind():
    with pytest.raises(UserInputError, match="valid kinds: likelihood, encoder, guide, prior"):
        register("posterior", "x", object)
