"""Plug-ins: your own parts by name on the command line.

A plug-in is a Python module whose import registers parts (``pyro_vae.register(kind,
name, factory)``). The CLI imports, before it builds anything:

- the modules named by ``--import MODULE`` (repeatable, on every command);
- those in ``$PYRO_VAE_IMPORT`` (comma-separated);
- every entry point of the group ``pyro_vae.parts`` of the installed packages (an
  installed package's parts then appear by name with no flag): a module, or a function
  called with no arguments.

A run records the modules its config needed (``config.plugins``); ``evaluate``, ``sample``,
``viz``, ``compare`` and ``--resume`` import them again, and say in one line which one is
missing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable

from pyro_vae.errors import UserInputError

ENTRY_POINT_GROUP = "pyro_vae.parts"
ENVIRONMENT_VARIABLE = "PYRO_VAE_IMPORT"


def import_plugins(modules: Iterable[str], needed_by: str = "") -> list[str]:
    """Import each module (once); refuse one that cannot be imported, naming it."""
    imported = []
    for name in modules:
        name = name.strip()
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as error:
            why = f"{needed_by} needs the plug-in module {name!r}" if needed_by else (
                f"cannot import plug-in module {name!r}"
            )  # fmt: skip
            raise UserInputError(
                f"{why} ({error}); install it or put its folder on PYTHONPATH"
            ) from None
        imported.append(name)
    return imported


def environment_plugins() -> list[str]:
    return [name for name in os.environ.get(ENVIRONMENT_VARIABLE, "").split(",") if name.strip()]


def load_entry_points() -> list[str]:
    """Load the installed packages' ``pyro_vae.parts`` entry points; their names."""
    loaded = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = entry.load()
        except ImportError as error:
            raise UserInputError(
                f"the installed entry point {entry.name!r} ({entry.value}) of group "
                f"{ENTRY_POINT_GROUP} cannot be imported ({error})"
            ) from None
        if callable(target):
            target()
        loaded.append(entry.name)
    return loaded
