"""Network helpers: bf16 autocast of encoder and decoder leaves log-probabilities fp32; the
label join computed without concatenating equals the concatenated one."""

import dataclasses
import math

import pytest
import torch

from pyro_vae import train
from pyro_vae.importance import importance_log_likelihood
from pyro_vae.nn import (
    GatedDense,
    bounded_log_variance_scale,
    compute_in,
    linear_with_label,
    mlp,
    positive,
    with_label,
)
from pyro_vae.registry import build_vae
from tests.conftest import small_config


def test_positive_is_softplus_kept_off_zero():
    raw = torch.tensor([-100.0, 0.0, 3.0])
    torch.testing.assert_close(positive(raw), torch.nn.functional.softplus(raw) + 1e-6)


def test_bounded_log_variance_scale_is_exp_of_half_the_clamped_log_variance():
    raw = torch.tensor([-9.0, -6.0, -1.0, 0.0, 1.5, 2.0, 5.0], requires_grad=True)
    scale = bounded_log_variance_scale(raw)
    expected = torch.tensor([-6.0, -6.0, -1.0, 0.0, 1.5, 2.0, 2.0]).mul(0.5).exp()
    torch.testing.assert_close(scale, expected)
    assert scale.min().item() == pytest.approx(math.exp(-3))
    assert scale.max().item() == pytest.approx(math.e)
    scale.sum().backward()
    # Inside the bounds dσ/da = σ/2; outside, no gradient (the hardtanh's flat parts).
    inside = (raw > -6) & (raw < 2)
    torch.testing.assert_close(raw.grad[inside], expected[inside] / 2)
    assert (raw.grad[(raw < -6) | (raw > 2)] == 0).all()


@pytest.mark.parametrize(
    "label_shape",
    [(7,), (4, 1), (4, 1, 1)],
    ids=["labelled", "enumerated", "enumerated-with-particles"],
)
def test_linear_with_label_equals_the_layer_on_the_concatenated_input(label_shape):
    torch.manual_seed(0)
    layer = torch.nn.Linear(5 + 4, 3)
    features = torch.randn(7, 5, requires_grad=True)
    # enumerated: y = arange(C) shaped (C, 1, ...), as Pyro's parallel enumeration gives it
    y = torch.arange(4).reshape(label_shape) if len(label_shape) > 1 else torch.randint(4, (7,))
    joined = linear_with_label(layer, features, y, 4)
    reference = layer(with_label(features, y, 4))
    assert joined.shape == reference.shape
    torch.testing.assert_close(joined, reference)
    weights = torch.randn_like(reference)
    grads = torch.autograd.grad((joined * weights).sum(), [features, *layer.parameters()])
    expected = torch.autograd.grad((reference * weights).sum(), [features, *layer.parameters()])
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_linear_with_label_refuses_a_layer_of_another_width():
    with pytest.raises(ValueError, match="reads 9 inputs, not 6 features \\+ 4 classes"):
        linear_with_label(torch.nn.Linear(9, 3), torch.randn(2, 6), torch.tensor([0, 1]), 4)


def test_fp32_leaves_the_module_alone_and_bf16_keeps_names_and_fp32_outputs():
    net = mlp([6, 5, 4], "softplus", activate_last=False)
    forward = net.forward
    assert compute_in(net, "fp32").forward == forward
    reference = mlp([6, 5, 4], "softplus", activate_last=False)
    reference.load_state_dict(net.state_dict())
    keys = list(net.state_dict())
    compute_in(net, "bf16")
    x = torch.randn(3, 6)
    out = net(x)
    assert out.dtype == torch.float32 and list(net.state_dict()) == keys
    assert not torch.equal(out, reference(x))  # the products did run in bf16
    torch.testing.assert_close(out, reference(x), rtol=0.05, atol=0.05)


def test_bf16_networks_move_the_test_log_likelihood_by_under_a_tenth_of_a_nat(trained_run):
    """Issue 7's bound for the opt-in bf16 path: the same trained weights, the same draws,
    encoder and decoder in bf16 against fp32."""
    config = dataclasses.replace(trained_run.config, precision="bf16")
    model, guide = build_vae(config, trained_run.data.image_shape)
    model.load_state_dict(trained_run.model.state_dict())
    guide.load_state_dict(trained_run.guide.state_dict())
    images = trained_run.data.test[:200].float().div(255).round()
    fp32 = importance_log_likelihood(trained_run.model, trained_run.guide, images, 200)
    bf16 = importance_log_likelihood(model, guide, images, 200)
    moved = bf16.summary["log_likelihood"] - fp32.summary["log_likelihood"]
    assert abs(moved) < 0.1
    assert bf16.summary["log_likelihood"] != pytest.approx(fp32.summary["log_likelihood"], 1e-9)


def test_gated_dense_is_a_linear_unit_times_its_sigmoid_gate():
    torch.manual_seed(0)
    layer = GatedDense(5, 3)
    x = torch.randn(4, 5)
    expected = (x @ layer.linear.weight.T + layer.linear.bias) * torch.sigmoid(
        x @ layer.gate.weight.T + layer.gate.bias
    )
    assert torch.allclose(layer(x), expected)
    head = mlp([5, 7, 3], "relu", activate_last=False, gated=True)
    assert [type(m).__name__ for m in head] == ["GatedDense", "Linear"]
    features = mlp([5, 7, 3], "relu", activate_last=True, gated=True)
    assert [type(m).__name__ for m in features] == ["GatedDense", "GatedDense"]


def test_the_vampprior_papers_gated_networks_train(tmp_path):
    config = small_config(encoder="gated-mlp", decoder="gated-mlp", prior="vamp", epochs=2)
    run = train(config, run_dir=tmp_path / "run", progress=False)
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"] + 5
