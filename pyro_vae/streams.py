"""The random streams of a training run, and what a checkpoint keeps of them.

One process: one generator draws the epochs' permutations and the dynamic binarization,
and Pyro's latent draws come from torch's global generator, seeded with ``config.seed``
before the networks are built. N processes (torchrun): the networks are built from that
seed on every rank, and the permutation generator is the same on every rank; each rank's
latent draws and binarization come from streams of its own, seeded from (seed, rank). A
checkpoint holds every rank's streams: resumed on as many processes, a run continues them
bit for bit (on the CPU); on another number, each rank's streams start afresh from (seed,
rank, epochs done, step), and a warning says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from pyro_vae.checkpoint import capture_rng, restore_rng
from pyro_vae.distributed import ProcessGroup
from pyro_vae.evaluation import stream_seed

# The last key of a rank's own stream seeds: which of its two streams
LATENT_STREAM, BINARIZE_STREAM = 0, 1


@dataclass
class Streams:
    """This rank's streams: ``generator`` (the permutations), ``binarizer`` (the dynamic
    binarization; the generator itself in one process) and torch's global generator."""

    seed: int
    group: ProcessGroup
    device: torch.device
    generator: torch.Generator
    binarizer: torch.Generator

    @classmethod
    def create(cls, seed: int, device: torch.device, group: ProcessGroup) -> Streams:
        generator = torch.Generator(device=device).manual_seed(seed)
        binarizer = torch.Generator(device=device) if group.is_parallel else generator
        return cls(seed, group, device, generator, binarizer)

    def start(self, state: dict | None) -> None:
        """Seed the streams of a new run, or take a checkpoint's (module docstring)."""
        group = self.group
        if state is None:
            if group.is_parallel:
                self._seed_own(group.rank)
            return
        restore_rng(state["rng"], self.generator)
        stored = state.get("world_size", 1)
        if stored == group.world_size:
            if group.is_parallel:
                own = state["rank_streams"][group.rank]
                torch.set_rng_state(own["torch"])
                if own["cuda"] is not None:
                    torch.cuda.set_rng_state(own["cuda"], self.device)
                self.binarizer.set_state(own["binarize"])
            return
        where = state["position"]
        if group.is_main:
            warnings.warn(
                f"resuming a {stored}-process run on {group.world_size} process(es): each "
                f"process's latent and binarization streams start afresh from (seed, rank, "
                f"epoch {where['epochs_done']}, step {where['step']}); the run is reproducible "
                f"but not the one an uninterrupted {stored}-process run would give",
                stacklevel=2,
            )
        self._seed_own(group.rank, where["epochs_done"], where["step"])

    def _seed_own(self, rank: int, *position: int) -> None:
        """This rank's own streams from (seed, rank) and, on a resume with another number
        of processes, the position (epochs done, step) it resumes at."""
        keys = (self.seed, rank, *position)
        torch.manual_seed(stream_seed(*keys, LATENT_STREAM))
        if self.binarizer is not self.generator:
            self.binarizer.manual_seed(stream_seed(*keys, BINARIZE_STREAM))

    def state(self) -> dict:
        """The checkpoint's part: ``rng``, ``world_size`` and under torchrun every rank's
        ``rank_streams`` (a collective: every rank calls it)."""
        own = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "binarize": self.binarizer.get_state(),
        }
        streams = self.group.gather(own)
        state = {"rng": capture_rng(self.generator), "world_size": self.group.world_size}
        if self.group.is_parallel:
            state["rank_streams"] = streams
        return state
