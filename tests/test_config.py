import json

import pytest

from pyro_vae.config import TrainConfig, read_config_file, validate
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


@pytest.mark.parametrize(
    "values, message",
    [
        ({"latent_dim": "8"}, "latent_dim must be an integer, got '8'"),
        ({"lr": "fast"}, "lr must be a number, got 'fast'"),
        ({"clip_norm": [1]}, "clip_norm must be a number or null, got \\[1\\]"),
        ({"hidden_dims": [400, 2.5]}, "hidden_dims must be a list of integers"),
        ({"download": "yes"}, "download must be true or false"),
        ({"epochs": True}, "epochs must be an integer, got True"),
    ],
)
def test_values_of_the_wrong_type_name_their_field(values, message):
    with pytest.raises(UserInputError, match=message):
        TrainConfig.from_dict(values)


def test_config_files_in_json_and_toml(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('epochs = 3\nhidden_dims = [32, 16]\nguide = "iaf"\nlr = 2e-3\n')
    values = read_config_file(toml)
    assert TrainConfig.from_dict(values) == TrainConfig(
        epochs=3, hidden_dims=[32, 16], guide="iaf", lr=2e-3
    )
    as_json = tmp_path / "config.json"
    as_json.write_text(json.dumps(TrainConfig.from_dict(values).to_dict()))
    assert read_config_file(as_json) == TrainConfig.from_dict(values).to_dict()
    (tmp_path / "broken.toml").write_text("epochs = \n")
    with pytest.raises(UserInputError, match="broken.toml does not parse .*line 1"):
        read_config_file(tmp_path / "broken.toml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UserInputError, match="must hold an object of config fields"):
        read_config_file(tmp_path / "list.json")
    with pytest.raises(UserInputError, match="cannot read config file .*missing.json"):
        read_config_file(tmp_path / "missing.json")


def test_guide_scale_asks_only_the_guide_families_the_model_builds():
    """A single-layer model builds no top guide, so --top-guide cannot refuse the scale."""
    validate(TrainConfig(guide_scale="bounded-logvar", top_guide="iaf"))
    with pytest.raises(UserInputError, match="the guide here is diag-normal \\+ iaf"):
        validate(TrainConfig(model="hvae", guide_scale="bounded-logvar", top_guide="iaf"))
