"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a dict of tensors and plain Python values (``torch.load(weights_only=True)``
refuses anything else), tagged with a format version and the run's full config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pyro_vae.errors import UserInputError

FORMAT = "pyro-vae-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def write_atomically(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    # fsync the directory so the rename itself survives a power cut.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    write_atomically(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU; a missing, truncated or foreign file is a UserInputError."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(
            f"no checkpoint at {path}; train a run first (pyro-vae train --out DIR)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle refused by weights_only, ...
        reason = " ".join(str(error).split())[:200]
        raise UserInputError(
            f"{path} is not a readable pyro-vae checkpoint ({type(error).__name__}: {reason})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserInputError(f"{path} is not a pyro-vae checkpoint (no {FORMAT!r} tag)")
    if state.get("format_version") != FORMAT_VERSION:
        raise UserInputError(
            f"{path} has checkpoint format version {state.get('format_version')!r}; this pyro-vae "
            f"reads version {FORMAT_VERSION}"
        )
    return state
