"""The class-conditional models and guides (models/conditional.py, guides/conditional.py):
shapes under Pyro's enumeration, generation per class, every guide family conditioned on
the label, and the refusals."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae import UserInputError
from pyro_vae.registry import build_vae
from pyro_vae.semisupervised import SemiSupervisedELBO
from tests.conftest import small_config
from tests.test_semisupervised import CLASSES, images, tiny_m2


def test_enumerated_label_broadcasts_through_model_and_guide():
    model, guide = tiny_m2()
    x = images(5)
    enumerated = pyro.poutine.enum(guide, first_available_dim=-2)
    guide_trace = pyro.poutine.trace(enumerated).get_trace(x)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(x)
    assert guide_trace.nodes["y"]["value"].shape == (CLASSES, 1)
    assert guide_trace.nodes["z"]["value"].shape == (CLASSES, 5, 3)
    for name in ("y", "z", "x"):
        site = model_trace.nodes[name]
        assert site["fn"].log_prob(site["value"]).shape == (CLASSES, 5), name


def test_generation_per_class_and_the_cvae_needs_labels():
    model, guide = tiny_m2()
    assert model.class_samples(3).shape == (CLASSES * 3, 1, 3, 3)
    assert model.sample_means(7).shape == (7, 1, 3, 3)
    assert guide.predict(images(6)).shape == (6,)
    pyro.clear_param_store()
    cvae, cvae_guide = build_vae(small_config(model="cvae", hidden_dims=[8]), (1, 3, 3), CLASSES)
    assert cvae.needs_labels and not model.needs_labels
    with pytest.raises(UserInputError, match="give the labels y"):
        cvae(images(2))
    with pytest.raises(UserInputError, match="has no classifier"):
        cvae_guide(images(2))
    labels = torch.tensor([0, 3])
    assert cvae.reconstruct(cvae_guide, images(2), labels).shape == (2, 1, 3, 3)


def test_every_guide_family_conditions_on_the_label():
    """q(z | x, y) of each registry family under m2: enumerated y broadcasts through it."""
    from pyro_vae.registry import names

    x = images(4)
    for family in names("guide"):
        if family.startswith("zuko"):
            pytest.importorskip("zuko")
        pyro.clear_param_store()
        config = small_config(model="m2", labels=8, guide=family, hidden_dims=[16], latent_dim=3)
        model, guide = build_vae(config, (1, 3, 3), CLASSES)
        loss = SemiSupervisedELBO(1, 1.0).differentiable_loss(
            model, guide, x, x[:2], torch.tensor([0, 1])
        )
        assert torch.isfinite(loss), family
        assert guide.code(x).shape == (4, 3), family
        assert dist.Categorical(logits=guide.classifier(x)).batch_shape == (4,)
