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
    initialize_weights,
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


def test_he_normal_redraws_every_weight_from_n0_2_over_fan_in_and_keeps_the_rest():
    """Weights of linear and conv layers ~ N(0, 2/fan_in), from the seed alone; biases and
    parameters outside such layers are left as built."""
    torch.manual_seed(0)
    free = torch.nn.Parameter(torch.randn(5))
    network = torch.nn.ModuleList([torch.nn.Linear(784, 300), torch.nn.Conv2d(16, 32, 5)])
    network.register_parameter("free", free)
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    initialize_weights(network, "he-normal", seed=3)
    for layer, fan_in in ((network[0], 784), (network[1], 16 * 25)):
        weight = layer.weight.detach()
        n = weight.numel()
        std = math.sqrt(2 / fan_in)
        assert abs(weight.mean().item()) < 4 * std / math.sqrt(n)
        # the sample std of n normal draws has relative SE 1/√(2n)
        assert weight.std().item() == pytest.approx(std, rel=4 / math.sqrt(2 * n))
    for name in ("0.bias", "1.bias", "free"):
        assert torch.equal(dict(network.named_parameters())[name], before[name])
    again = torch.nn.ModuleList([torch.nn.Linear(784, 300), torch.nn.Conv2d(16, 32, 5)])
    initialize_weights(again, "he-normal", seed=3)
    assert torch.equal(again[0].weight, network[0].weight)  # the seed decides, not the stream


def test_torch_init_leaves_the_network_as_built_and_a_shared_layer_is_drawn_once():
    shared = torch.nn.Linear(10, 10)
    pair = torch.nn.ModuleDict({"model": torch.nn.Sequential(shared), "guide": shared})
    before = shared.weight.detach().clone()
    initialize_weights(pair, "torch", seed=0)
    assert torch.equal(shared.weight, before)
    initialize_weights(pair, "he-normal", seed=0)
    alone = torch.nn.Linear(10, 10)
    initialize_weights(alone, "he-normal", seed=0)
    assert torch.equal(shared.weight, alone.weight)  # one draw, not a second over the first


def test_a_he_normal_run_starts_from_those_weights_and_keeps_the_pseudo_inputs(tmp_path):
    """--weight-init reaches the trainer: a VampPrior run's untrained layers are He's, and
    its pseudo-inputs (a parameter of no layer) are the default run's."""
    vamp = dict(epochs=0, prior="vamp", prior_components=7, encoder="gated-mlp")
    he = train(small_config(**vamp, weight_init="he-normal"), tmp_path / "he", progress=False)
    plain = train(small_config(**vamp), tmp_path / "plain", progress=False)
    he_state, plain_state = he.guide.state_dict(), plain.guide.state_dict()
    weights = [name for name in he_state if name.endswith("weight")]
    assert weights and all(not torch.equal(he_state[n], plain_state[n]) for n in weights)
    first = he_state[weights[0]]
    assert first.std().item() == pytest.approx(math.sqrt(2 / first.shape[1]), rel=0.05)
    torch.testing.assert_close(
        he.model.prior.pseudo_inputs, plain.model.prior.pseudo_inputs, rtol=0, atol=0
    )


def test_glorot_uniform_draws_within_its_bound_with_its_variance_and_zero_biases():
    """U(±a), a = √(6/(fan_in + fan_out)): inside the bound, variance a²/3, biases 0."""
    network = torch.nn.Sequential(torch.nn.Linear(200, 50), torch.nn.Conv2d(8, 16, 3))
    initialize_weights(network, "glorot-uniform", seed=0)
    for layer, fan_in, fan_out in ((network[0], 200, 50), (network[1], 8 * 9, 16 * 9)):
        weight, bound = layer.weight.detach(), math.sqrt(6 / (fan_in + fan_out))
        assert weight.abs().max().item() <= bound
        assert weight.abs().max().item() > 0.99 * bound  # the whole interval is used
        n = weight.numel()
        # var of U(±a) is a²/3; a sample variance's relative SE is √(0.8/n) for a uniform
        assert weight.var().item() == pytest.approx(bound**2 / 3, rel=4 * math.sqrt(0.8 / n))
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_data_logit_output_bias_starts_the_decoder_at_each_pixels_mean(tmp_path):
    """--output-bias data-logit: the untrained decoder's output bias is the logit of each
    pixel's mean over the training images (clipped to [0.001, 0.999]), so with Burda et
    al.'s zero biases and z's layer switched off it draws every pixel at its mean rate."""
    from pyro_vae.data import load_data

    config = small_config(epochs=0, weight_init="glorot-uniform", output_bias="data-logit")
    run = train(config, tmp_path / "run", progress=False)
    data = load_data(config.dataset, "dynamic")
    (inputs,) = data.eval_batches("train", len(data.train))  # the model's inputs, in [0, 1]
    mean = inputs.mean(0).clamp(0.001, 0.999)
    assert 0.001 < mean.mean().item() < 0.5  # digits: dark background
    output = run.model.decoder.net[-1]
    torch.testing.assert_close(output.bias.detach(), torch.logit(mean).reshape(-1))
    with torch.no_grad():
        output.weight.zero_()
        probs = torch.sigmoid(run.model.decoder(torch.randn(3, config.latent_dim)))
    torch.testing.assert_close(probs, mean.expand(3, *mean.shape))
