"""pyro-vae: variational autoencoders as genuine Pyro programs.

from pyro_vae import TrainConfig, train, load_run, evaluate
run = train(TrainConfig(dataset="digits", epochs=10), run_dir="runs/demo")
print(run.test_elbo)                      # nats per image
print(evaluate(load_run("runs/demo")))    # the same number, recomputed from the checkpoint
"""

import importlib

# Exports load on first use (PEP 562): ``models`` and ``guides`` import helpers from
# ``pyro_vae.nn`` and ``pyro_vae.errors``, and an eager import of the registry here would
# import them back half-initialized, so ``import models`` on its own would fail.
_EXPORTS = {
    "build_vae": "pyro_vae.registry",
    "evaluate": "pyro_vae.api",
    "importance_log_likelihood": "pyro_vae.importance",
    "load_run": "pyro_vae.run",
    "log_likelihood": "pyro_vae.api",
    "LogLikelihoodEstimate": "pyro_vae.importance",
    "make_elbo": "pyro_vae.registry",
    "register": "pyro_vae.registry",
    "REGISTRY": "pyro_vae.registry",
    "Run": "pyro_vae.run",
    "train": "pyro_vae.trainer",
    "train_pair": "pyro_vae.pairs",
    "TrainConfig": "pyro_vae.config",
    "UserInputError": "pyro_vae.errors",
    "visualize": "pyro_vae.api",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
