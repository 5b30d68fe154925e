"""The private PyTorch APIs of pyro_vae.torch_private: each test fails, naming the API, when
the installed torch no longer has it (the code then runs on its public fallback)."""

import pytest
import torch

from pyro_vae.torch_private import PRIVATE_APIS, add_nonfinite_flag


def test_the_amp_non_finite_kernel_exists():
    name = "_amp_foreach_non_finite_check_and_unscale_"
    assert PRIVATE_APIS[0] == f"torch.{name}"
    assert hasattr(torch, name), (
        f"torch {torch.__version__} has no torch.{name}: pyro_vae.torch_private now checks "
        "gradients with torch.nn.utils.get_total_norm (2.6x slower); update it"
    )


def test_fused_adam_skips_a_step_when_found_inf_is_set():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([weight], lr=0.1, fused=True)
    weight.grad = torch.ones(3)
    optimizer.found_inf = torch.ones(())  # AMP's flag: skip this update
    optimizer.step()
    del optimizer.found_inf
    assert torch.equal(weight.detach(), torch.ones(3)), (
        f"torch {torch.__version__}'s fused Adam ignores found_inf "
        f"({PRIVATE_APIS[2]}): svi_step_deferred would apply non-finite updates on a GPU"
    )
    optimizer.step()  # without the flag it steps
    assert not torch.equal(weight.detach(), torch.ones(3))


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_the_flag_and_its_public_fallback_agree(bad, monkeypatch):
    grads = [torch.randn(5, 4), torch.randn(7)]
    if bad is not None:
        grads[1][3] = bad
    kept = [g.clone() for g in grads]
    found = torch.zeros(())
    add_nonfinite_flag(grads, found)
    monkeypatch.delattr(torch, "_amp_foreach_non_finite_check_and_unscale_")
    fallback = torch.zeros(())
    add_nonfinite_flag(grads, fallback)
    assert bool(found) == bool(fallback) == (bad is not None)
    for grad, before in zip(grads, kept):  # the gradients are left as they were
        torch.testing.assert_close(grad, before, equal_nan=True)


def test_the_dispatch_mode_sees_aten_operations():
    import importlib

    module = importlib.import_module("torch.utils._python_dispatch")
    assert hasattr(module, "TorchDispatchMode"), (
        f"torch {torch.__version__} moved {PRIVATE_APIS[1]}: pyro_vae.torch_private must "
        "import it from its new place (values_per_draw needs it)"
    )
    from pyro_vae.importance import _OutputSizes

    x, weight = torch.ones(2, 3), torch.ones(5, 3)
    with _OutputSizes() as recorder:
        torch.nn.functional.linear(x, weight)
    assert recorder.sizes == [15, 10]  # ATen's transpose of the weight, then the (2, 5) mm
