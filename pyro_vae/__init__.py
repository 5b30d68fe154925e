"""pyro-vae: variational autoencoders as genuine Pyro programs.

from pyro_vae import TrainConfig, train, load_run, evaluate
run = train(TrainConfig(dataset="digits", epochs=10), run_dir="runs/demo")
print(run.test_elbo)                      # nats per image
print(evaluate(load_run("runs/demo")))    # the same number, recomputed from the checkpoint
"""

import importlib
import importlib.abc
import importlib.util
import sys
from pathlib import Path

# In a source checkout models/ and guides/ sit beside this folder (the project's layout);
# installed, setuptools puts them inside it (pyproject.toml's package-dir). Where the
# checkout's folders are there and Python's own finders do not find pyro_vae.models or
# pyro_vae.guides (running from the checkout, which shadows the installed package), this
# finder gives them the checkout's folders; an installed package never reaches it.
_CHECKOUT = Path(__file__).resolve().parent.parent
_SOURCE_FOLDERS = {
    f"pyro_vae.{name}": _CHECKOUT / name
    for name in ("models", "guides")
    if (_CHECKOUT / name / "__init__.py").is_file() and (_CHECKOUT / "pyproject.toml").is_file()
}


class _CheckoutFolders(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        folder = _SOURCE_FOLDERS.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


if _SOURCE_FOLDERS and not any(isinstance(f, _CheckoutFolders) for f in sys.meta_path):
    sys.meta_path.append(_CheckoutFolders())

# Exports load on first use (PEP 562): ``pyro_vae.models`` and ``pyro_vae.guides`` import
# helpers from ``pyro_vae.nn`` and ``pyro_vae.errors``, and an eager import of the registry
# here would import them back half-initialized.
_EXPORTS = {
    "build_vae": "pyro_vae.registry",
    "evaluate": "pyro_vae.api",
    "ais_log_likelihood": "pyro_vae.ais",
    "bdmc": "pyro_vae.ais",
    "importance_log_likelihood": "pyro_vae.importance",
    "load_pair": "pyro_vae.pairs",
    "load_run": "pyro_vae.run",
    "log_likelihood": "pyro_vae.api",
    "LogLikelihoodEstimate": "pyro_vae.importance",
    "make_elbo": "pyro_vae.registry",
    "PairParts": "pyro_vae.pairs",
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
