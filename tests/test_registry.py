import pytest
import torch
from pyro_vae.models import StandardNormalPrior

from pyro_vae import REGISTRY, TrainConfig, UserInputError, build_vae, register, train
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


@pytest.mark.parametrize(
    "changes, name",
    [
        ({}, "ELBO"),
        ({"elbo": "stl"}, "ELBO"),
        ({"elbo": "iwae", "num_particles": 5}, "IWAE bound (K=5)"),
        ({"elbo": "iwae-dreg", "num_particles": 50}, "IWAE bound (K=50)"),
        ({"beta": 4.0}, "β-weighted ELBO (β=4)"),
        ({"kl_warmup_epochs": 100}, "β-weighted ELBO (KL warm-up)"),
        ({"model": "m2", "labels": 100}, "M2 objective (ELBO terms + α·log q(y|x))"),
    ],
)
def test_the_training_objective_is_named_for_what_it_is(changes, name):
    from pyro_vae.registry import objective_name

    assert objective_name(TrainConfig(**changes)) == name


def test_the_cli_names_the_objective_it_trained(tmp_path, capsys):
    from pyro_vae.cli import main

    flags = ["--elbo", "iwae", "--num-particles", "3", "--epochs", "1", "--quiet"]
    assert main(["train", *flags, "--out", str(tmp_path / "r")]) == 0
    assert "train IWAE bound (K=3): " in capsys.readouterr().out
