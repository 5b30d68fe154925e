"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a dict of tensors and plain Python values (``torch.load(weights_only=True)``
refuses anything else), tagged with a format version and the run's full config.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
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


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


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
        reason = " ".join(str(error).split())  # whole: torch's warning about pickles too
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


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from, as tensors and plain values (weights_only-safe).

    ``generator`` is the data stream (minibatch order and dynamic binarization); Pyro's
    latent samples draw from torch's global generators, CPU and CUDA.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": generator.get_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Put back the random states that :func:`capture_rng` took."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["data"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
