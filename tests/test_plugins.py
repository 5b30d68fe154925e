"""Plug-ins and the extension interface (pyro_vae.plugins, pyro_vae.protocols)."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pyro_vae import REGISTRY, UserInputError, build_vae, register
from pyro_vae.cli import main
from pyro_vae.protocols import PROTOCOLS, missing_member
from tests.conftest import small_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = ["--epochs", "1", "--hidden-dims", "16", "--latent-dim", "2", "--quiet",
         "--no-tensorboard"]  # fmt: skip


def test_every_built_in_part_meets_its_protocol():
    config = small_config()
    model, guide = build_vae(config, (1, 8, 8))
    parts = {"prior": model.prior, "guide": guide, "likelihood": model.likelihood,
             "encoder": guide.encoder, "decoder": model.decoder}  # fmt: skip
    assert set(parts) == set(PROTOCOLS)
    for kind, part in parts.items():
        assert missing_member(kind, part) is None, kind
    for name in REGISTRY["likelihood"]:
        part = REGISTRY["likelihood"][name](config, (1, 8, 8))
        assert missing_member("likelihood", part) is None, name


def test_register_refuses_a_part_that_lacks_a_member_naming_it():
    class NoDim(nn.Module):
        def forward(self, batch_shape):
            return None

    class NotAGuide(nn.Module):
        latent_dim = 2

        def forward(self, x):
            return None

    register("prior", "no-dim", lambda config, dim, posterior, shape: NoDim())
    register("guide", "not-a-guide", lambda config, encoder, dim: NotAGuide())
    try:
        with pytest.raises(
            UserInputError, match=r"the prior 'no-dim' \(NoDim\) has no 'latent_dim'"
        ):
            build_vae(small_config(prior="no-dim"), (1, 8, 8))
        with pytest.raises(UserInputError, match=r"has no 'posterior'; every guide provides"):
            build_vae(small_config(guide="not-a-guide"), (1, 8, 8))
    finally:
        del REGISTRY["prior"]["no-dim"], REGISTRY["guide"]["not-a-guide"]


def test_the_example_parts_train_from_the_cli_and_the_run_reimports_them(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    run = tmp_path / "run"
    assert main(["train", "--import", "custom_parts", "--prior", "laplace", "--guide",
                 "iso-normal", *SMALL, "--out", str(run)]) == 0  # fmt: skip
    assert json.loads((run / "config.json").read_text())["plugins"] == ["custom_parts"]
    del REGISTRY["prior"]["laplace"], REGISTRY["guide"]["iso-normal"]  # a new process
    import sys

    sys.modules.pop("custom_parts")
    assert main(["evaluate", str(run), "--elbo-only"]) == 0  # imports custom_parts again
    assert "laplace" in REGISTRY["prior"]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(EXAMPLES)])
    sys.modules.pop("custom_parts")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--elbo-only"]) == 2
    assert f"run {run} needs the plug-in module 'custom_parts'" in capsys.readouterr().err
    del REGISTRY["prior"]["laplace"], REGISTRY["guide"]["iso-normal"]


def test_plugins_come_from_the_environment_too(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYRO_VAE_IMPORT", "no_such_plugin_module")
    assert main(["train", *SMALL, "--out", str(tmp_path / "r")]) == 2
    assert "cannot import plug-in module 'no_such_plugin_module'" in capsys.readouterr().err
    assert torch.is_tensor(torch.zeros(1))
