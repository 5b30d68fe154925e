"""m2 and cvae training (pyro_vae/semisupervised.py): the enumerated objective against the
sum over classes written out by hand, the labelled subset, the batches, resumption, and
training that classifies (digits; one short MNIST epoch)."""

import json

import pyro
import pytest
import torch

from pyro_vae import UserInputError, load_run, train
from pyro_vae.objectives import LatentScale
from pyro_vae.registry import build_vae
from pyro_vae.semisupervised import (
    SemiSupervisedELBO,
    choose_labelled,
    classifier_weight,
    label_count,
    labelled_scale,
)
from tests.conftest import SHARED_DATA, needs_mnist, small_config
from tests.test_svi_resume import same_results

CLASSES = 4


def tiny_m2(seed=0):
    pyro.clear_param_store()
    torch.manual_seed(seed)
    config = small_config(model="m2", labels=8, hidden_dims=[16], latent_dim=3)
    return build_vae(config, (1, 3, 3), CLASSES)


def images(n, seed=1):
    return torch.bernoulli(torch.rand(n, 1, 3, 3, generator=torch.Generator().manual_seed(seed)))


def by_hand_unlabelled(model, guide, x, beta=1.0):
    """-U(x) summed over the batch, the sum over classes written out (Kingma et al. eq. 7):
    U(x) = Σ_y q(y|x) [log p(x|y,z_y) + log p(y) + β(log p(z_y) - log q(z_y|x,y))] + H(q(y|x)),
    one reparameterized z_y ~ q(z|x,y) per class, drawn as TraceEnum_ELBO draws them (the
    classes along dim -2); β weighs the code's KL alone (β = 1: the paper's U)."""
    q_y = guide.label_posterior(x)  # batch (N,)
    y = torch.arange(CLASSES)[:, None]  # (C, 1), as Pyro enumerates it
    q_z = guide.family.posterior((x, y))  # batch (C, N)
    z = q_z.rsample()
    log_p_y = torch.full((CLASSES, 1), -torch.log(torch.tensor(float(CLASSES))))
    kl_terms = model.prior(()).log_prob(z) - q_z.log_prob(z)
    terms = model.decode(z, y).log_prob(x) + log_p_y + beta * kl_terms  # (C, N)
    weights = q_y.probs.T  # (C, N)
    return -((weights * terms).sum(0) + q_y.entropy()).sum()


def by_hand_labelled(model, guide, x, y, beta=1.0):
    q_z = guide.family.posterior((x, y))
    z = q_z.rsample()
    log_p_y = -torch.log(torch.tensor(float(CLASSES)))
    kl_terms = model.prior(()).log_prob(z) - q_z.log_prob(z)
    return -(model.decode(z, y).log_prob(x) + log_p_y + beta * kl_terms).sum()


def gradients(loss, modules):
    params = [p for m in modules for p in m.parameters()]
    return torch.autograd.grad(loss, params, allow_unused=True)


def test_trace_enum_elbo_equals_the_sum_over_classes_by_hand():
    model, guide = tiny_m2()
    x = images(5)
    torch.manual_seed(3)
    pyro_loss = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x)
    torch.manual_seed(3)
    hand_loss = by_hand_unlabelled(model, guide, x)
    assert torch.allclose(pyro_loss, hand_loss, rtol=1e-5), (pyro_loss, hand_loss)
    pyro_grads = gradients(pyro_loss, [model, guide])
    for a, b in zip(pyro_grads, gradients(hand_loss, [model, guide])):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    # the classifier gets its gradient through q(y|x)'s weights: exact, not a score function
    classifier = {id(p) for p in guide.classifier.parameters()}
    params = [p for m in (model, guide) for p in m.parameters()]
    assert all(g.abs().sum() > 0 for p, g in zip(params, pyro_grads) if id(p) in classifier)


@pytest.mark.parametrize("beta", [1.0, 0.3, 2.0])
def test_m2_objective_is_unlabelled_plus_labelled_plus_classification(beta):
    """With the programs wrapped in a KL weight (LatentScale, as KL warm-up and --beta wrap
    them), β weighs the code's KL alone: the label's terms and the classification keep
    weight one."""
    model, guide = tiny_m2()
    x_u, x_l, y_l = images(5), images(3, seed=2), torch.tensor([0, 3, 1])
    alpha, scale = 2.5, 0.3
    program = (model, guide) if beta == 1 else (LatentScale(beta)(model), LatentScale(beta)(guide))
    torch.manual_seed(4)
    loss = SemiSupervisedELBO(1, alpha, scale).differentiable_loss(*program, x_u, x_l, y_l)
    torch.manual_seed(4)
    unlabelled = by_hand_unlabelled(model, guide, x_u, beta)
    labelled = by_hand_labelled(model, guide, x_l, y_l, beta)
    labelled = labelled - alpha * guide.label_posterior(x_l).log_prob(y_l).sum()
    by_hand = unlabelled + scale * labelled
    assert torch.allclose(loss, by_hand, rtol=1e-5), (loss, by_hand)
    for a, b in zip(gradients(loss, [model, guide]), gradients(by_hand, [model, guide])):
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_labelled_subset_is_balanced_and_seeded():
    labels = torch.arange(100) % 10
    chosen = choose_labelled(labels, 23, 10, seed=0)
    counts = torch.bincount(labels[chosen], minlength=10)
    assert counts.tolist() == [3, 3, 3] + [2] * 7
    assert torch.equal(chosen, choose_labelled(labels, 23, 10, seed=0))
    assert not torch.equal(chosen, choose_labelled(labels, 23, 10, seed=1))
    with pytest.raises(UserInputError, match="fewer than the 10 classes"):
        choose_labelled(labels, 9, 10, seed=0)
    with pytest.raises(UserInputError, match="leaves no unlabelled image"):
        choose_labelled(labels, 100, 10, seed=0)
    with pytest.raises(UserInputError, match="has no labels"):
        label_count(torch.full((5,), -1), "mine.npz")


@pytest.mark.parametrize("labels, batch", [(100, 100), (3000, 100), (40, 100), (1000, 64)])
def test_labelled_image_counts_as_much_as_an_unlabelled_one(labels, batch):
    """Under --labelled-weighting data, over an epoch (N_u / B_u steps) an unlabelled image
    enters once with weight one; a labelled one is drawn B_l / N_l of the steps with weight
    s: in expectation also once, so the epoch's loss estimates Kingma et al.'s J^α over the
    whole training set."""
    num_train = 60_000
    config = small_config(model="m2", labels=labels, batch_size=batch)
    assert labelled_scale(config, num_train) == 1.0  # the default: batch for batch
    config.labelled_weighting = "data"
    steps = (num_train - labels) / batch
    drawn_per_step = min(batch, labels) / labels
    assert steps * drawn_per_step * labelled_scale(config, num_train) == pytest.approx(1.0)


def test_default_classifier_weight_is_kingmas():
    config = small_config(model="m2", labels=100)
    assert classifier_weight(config, 50_000) == pytest.approx(50.0)  # 0.1·N / labels
    config.classifier_weight = 3.0
    assert classifier_weight(config, 50_000) == 3.0


@pytest.fixture(scope="module")
def m2_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("m2") / "run"
    config = small_config(model="m2", labels=50, epochs=5, hidden_dims=[128], latent_dim=8)
    return train(config, run_dir=run_dir, progress=False)


def test_m2_on_digits_with_50_labels_classifies_far_better_than_chance(m2_run):
    last = m2_run.history[-1]
    assert last["compile"] == "jit"  # TraceEnum_ELBO's trace held against the eager loss
    assert last["test_error"] < 0.5  # chance: 0.9
    assert last["test_error"] < m2_run.history[0]["test_error"] - 0.3
    record = json.loads((m2_run.run_dir / "labelled.json").read_text())
    assert len(record["train_index"]) == 50
    assert torch.bincount(torch.tensor(record["labels"])).tolist() == [5] * 10
    assert last["test_elbo"] == pytest.approx(last["test_reconstruction"] - last["test_kl"])


def test_m2_with_kl_warmup_traces_and_resumes_bit_for_bit(tmp_path):
    config = small_config(
        model="m2", labels=30, epochs=3, hidden_dims=[32], latent_dim=4, kl_warmup_epochs=3
    )
    whole = train(config, run_dir=tmp_path / "whole", progress=False)
    # one trace per β (the classification term runs under the warm-up's scale, unscaled)
    assert [row["compile"] for row in whole.history[1:]] == ["jit"] * 3
    assert [row["kl_weight"] for row in whole.history[1:]] == pytest.approx([1 / 3, 2 / 3, 1])
    config.epochs = 2
    train(config, run_dir=tmp_path / "parts", progress=False)
    config.epochs = 3
    train(config, run_dir=tmp_path / "parts", progress=False, resume=True)
    same_results(tmp_path / "whole", tmp_path / "parts")


def test_cvae_uses_its_labels(tmp_path):
    config = small_config(model="cvae", epochs=8, hidden_dims=[128], latent_dim=4, lr=3e-3)
    run = train(config, run_dir=tmp_path / "cvae", progress=False)
    assert run.history[-1]["compile"] == "jit"
    from pyro_vae.importance import importance_log_likelihood

    x, y = run.data.test[:100].float() / 255, run.data.test_labels[:100]
    true = importance_log_likelihood(
        run.model, run.guide, x, 100, labels=y, condition_on_labels=True
    )
    wrong = importance_log_likelihood(
        run.model, run.guide, x, 100, labels=(y + 1) % 10, condition_on_labels=True
    )
    # log p(x | y) at the true label beats a wrong one, image by image for most
    assert true.summary["log_likelihood"] > wrong.summary["log_likelihood"] + 3
    assert (true.log_likelihood > wrong.log_likelihood).mean() > 0.8
    loaded = load_run(tmp_path / "cvae")
    assert loaded.model.needs_labels and loaded.guide.classifier is None


@needs_mnist
def test_m2_trains_on_mnist(tmp_path):
    """The same code on MNIST: one short epoch (1,000 training images, 100 labelled)."""
    config = small_config(
        model="m2",
        labels=100,
        epochs=1,
        dataset="mnist",
        data_dir=str(SHARED_DATA),
        download=False,
        valid_size=59_000,
        eval_batch_size=2000,
    )
    run = train(config, run_dir=tmp_path / "m2", progress=False)
    last = run.history[-1]
    assert last["test_error"] < 0.85 and last["test_elbo"] > run.history[0]["test_elbo"]


def test_m2_refuses_what_it_cannot_use():
    with pytest.raises(UserInputError, match="needs --labels N"):
        train(small_config(model="m2"), progress=False)
    with pytest.raises(UserInputError, match="VampPrior"):
        build_vae(small_config(model="m2", labels=20, prior="vamp"), (1, 8, 8))
    for field, value, message in (
        ("elbo", "iwae", "TraceEnum_ELBO"),
        ("top_guide", "iaf", "for --model hvae"),
    ):
        with pytest.raises(UserInputError, match=message):
            train(small_config(model="m2", labels=20, **{field: value}), progress=False)
    with pytest.raises(UserInputError, match="is for --model m2"):
        train(small_config(labels=20), progress=False)
