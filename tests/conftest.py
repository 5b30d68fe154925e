import importlib.util
import sys
import types
from pathlib import Path

import pyro
import pytest

from pyro_vae import TrainConfig, train

# The shared MNIST copy beside the checkout (and in CI): ../shared/data/MNIST/raw.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_RAW = SHARED_DATA / "MNIST" / "raw"

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> types.ModuleType:
    """``scripts/<name>.py`` as a module (scripts/ is not a package). As when the script is
    run, scripts/ is on the path while it loads, for its ``import bench_common``."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


needs_mnist = pytest.mark.skipif(
    not (MNIST_RAW / "train-images-idx3-ubyte").is_file(),
    reason=f"shared MNIST copy not found at {MNIST_RAW}",
)


def small_config(**overrides) -> TrainConfig:
    """A small network on the embedded digits: seconds to train on two CPU cores."""
    values = dict(epochs=2, hidden_dims=[64], latent_dim=8, batch_size=64, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def latent_sites(trace) -> list[str]:
    """The names of a Pyro trace's latent sample sites, in the order they ran."""
    from pyro.poutine.util import site_is_subsample

    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site) and not site["is_observed"]
    ]


def one_weight_and_its_draw(model, guide, x, sites: tuple[str, ...], seed: int = 3):
    """log w of one importance sample per image of ``x``, and the values of ``sites`` it was
    computed at (drawn again from the guide under the same seed), having checked that the
    model replays them."""
    import torch
    from pyro import poutine

    from pyro_vae.importance import log_importance_weights

    pyro.set_rng_seed(seed)
    log_w = log_importance_weights(model, guide, x, 1)[0]
    pyro.set_rng_seed(seed)
    with torch.no_grad(), pyro.plate("particles", 1, dim=-2):
        q = poutine.trace(guide).get_trace(x)
        p = poutine.trace(poutine.replay(model, trace=q)).get_trace(x)
    values = tuple(q.nodes[site]["value"][0] for site in sites)
    assert all(torch.equal(p.nodes[s]["value"][0], v) for s, v in zip(sites, values))
    return log_w.detach(), values


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One small digits run shared by the tests that only read it."""
    run_dir = tmp_path_factory.mktemp("runs") / "digits"
    return train(small_config(epochs=3), run_dir=run_dir, progress=False)
