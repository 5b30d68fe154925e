import pytest

from pyro_vae.config import TrainConfig, validate
from pyro_vae.errors import UserInputError


def test_defaults_are_valid_and_round_trip():
    config = TrainConfig()
    validate(config)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_unknown_field_names_the_valid_ones():
    with pytest.raises(UserInputError, match="unknown config field.*learning_rate.*valid fields"):
        TrainConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize(
    "field, value",
    [
        ("latent_dim", 0),
        ("batch_size", 2.5),
        ("num_particles", True),
        ("eval_batch_size", -3),
        ("epochs", -1),
        ("hidden_dims", []),
        ("hidden_dims", [400, 0]),
        ("lr", 0.0),
        ("lr", float("inf")),
        ("clip_norm", -1.0),
        ("binarize", "half"),
        ("device", "gpu"),
        ("seed", -1),
    ],
)
def test_invalid_values_name_their_field(field, value):
    with pytest.raises(UserInputError, match=field):
        validate(TrainConfig(**{field: value}))
