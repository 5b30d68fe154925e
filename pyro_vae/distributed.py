"""Data-parallel training and evaluation on ``torch.distributed``, launched by torchrun.

``torchrun --nproc_per_node=N -m pyro_vae train ...`` starts N processes (ranks) that train
one model: NCCL between GPUs, gloo between CPU processes. Each step, every rank takes a
disjoint shard of the same global minibatch (``--batch-size`` is the global batch), and
PyTorch's ``DistributedDataParallel`` averages the gradients over the ranks during the
backward pass. The loss of a batch is a *sum* over its images, so each rank backpropagates
N times its shard's loss:

    rank r:  L_r = Σ_{i ∈ shard r} loss_i,    backward of N·L_r
    DDP:     (1/N) Σ_r ∇(N·L_r) = ∇ Σ_i loss_i            (the one-process gradient)

and N processes take the step that one process takes on the global batch. The loss each
rank reports is the all-reduced (1/N) Σ_r N·L_r = Σ_i loss_i, the global batch's loss: it
is finite on every rank or on none, and so are the gradients DDP averaged, so a non-finite
step is skipped (or stops the run) on every rank alike.

Assumptions: every rank runs the same command (same config), so the networks start equal
and every rank draws the same epoch permutation; the random streams of the latent draws and
of dynamic binarization are each rank's own (see ``pyro_vae.trainer``).

Outside torchrun (no ``WORLD_SIZE`` in the environment), or with one process, the
:data:`SINGLE` group does no communication at all, and training is what it always was.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import fixed_seed


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def local_world_size() -> int:
    """How many processes torchrun started on this machine (1 outside torchrun)."""
    return _env_int("LOCAL_WORLD_SIZE", 1)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0)


def is_main_process() -> bool:
    """Rank 0 (or no torchrun): the process that prints results and writes files."""
    return _env_int("RANK", 0) == 0


def speaks_for_machine() -> bool:
    """Whether this process prints errors and warnings: the first process of each machine,
    so one line reports what every rank of it met (and a machine-specific problem, say
    missing data on the second machine, is still seen)."""
    return local_rank() == 0


def is_restart() -> bool:
    """Whether torchrun restarted this worker group after a failure (``--max-restarts``)."""
    return _env_int("TORCHELASTIC_RESTART_COUNT", 0) > 0


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the ranks training one model, and what they share."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run folder and shows progress."""
        return self.rank == 0

    @property
    def is_parallel(self) -> bool:
        return self.world_size > 1

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's disjoint part of a global batch's indices (sizes differ by at most 1)."""
        if not self.is_parallel:
            return index
        return torch.tensor_split(index, self.world_size)[self.rank]

    def check_shards(self, batch_size: int, num_images: int, kind: str = "training") -> None:
        """Refuse a global batch, or an epoch's last batch, with fewer images than ranks;
        ``kind`` names the images an epoch passes over (m2: the unlabelled training ones)."""
        if not self.is_parallel:
            return
        last = num_images % batch_size
        if batch_size < self.world_size:
            raise UserInputError(
                f"--batch-size {batch_size} is the global batch, shared by {self.world_size} "
                f"processes; give each at least one image: --batch-size {self.world_size} or "
                "more, or fewer processes"
            )
        if 0 < last < self.world_size:
            raise UserInputError(
                f"each epoch's last batch holds {last} of the {num_images} {kind} images, "
                f"fewer than the {self.world_size} processes; choose a --batch-size that leaves "
                f"no remainder or one of at least {self.world_size} images"
            )

    def loss_module(
        self,
        loss: Callable[[torch.Tensor], torch.Tensor],
        model: nn.Module,
        guide: nn.Module,
        probe: tuple[torch.Tensor, ...],
    ) -> Callable[..., torch.Tensor]:
        """The loss a step backpropagates: ``loss`` itself in one process; under torchrun,
        ``DistributedDataParallel`` over N times this rank's shard loss (module docstring).

        ``probe`` (a shard-sized batch: the loss's arguments) finds out whether some
        parameters get no gradient, which DDP must be told. Its draws are made under a
        fixed seed: no stream moves.
        """
        if not self.is_parallel:
            return loss
        module = ShardLoss(loss, model, guide, self.world_size)
        params = [p for p in module.parameters() if p.requires_grad]
        device = probe[0].device
        with fixed_seed(2, device):
            grads = torch.autograd.grad(module(*probe), params, allow_unused=True)
        return DistributedDataParallel(
            module,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=any(g is None for g in grads),
            **_CONSTANT_BUFFERS,
        )

    def global_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The global batch's loss from each rank's N·L_r: their mean over the ranks."""
        if not self.is_parallel:
            return loss
        total = loss.detach().clone()
        dist.all_reduce(total)  # gloo has no AVG
        return total / self.world_size

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true on every rank if it is true on any (one collective)."""
        if not self.is_parallel:
            return flags
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        counts = torch.tensor([float(f) for f in flags], device=device)
        dist.all_reduce(counts)
        return tuple(bool(c > 0) for c in counts.tolist())

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` (picklable) on every rank."""
        if not self.is_parallel:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable, CPU), in rank order, on every rank."""
        if not self.is_parallel:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.is_parallel:
            dist.barrier()


SINGLE = ProcessGroup()

# The models' buffers are constants: DDP need not broadcast them before every forward pass
# (torch 2.14 renamed the option; older releases know only the old name).
_CONSTANT_BUFFERS = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


class ShardLoss(nn.Module):
    """N times a rank's shard loss, as a module whose parameters are the model's and the
    guide's (the loss may wrap them in handlers, a KL warm-up's say, which hide them from
    ``nn.Module``), so that ``DistributedDataParallel`` sees every parameter it averages."""

    def __init__(
        self,
        loss: Callable[[torch.Tensor], torch.Tensor],
        model: nn.Module,
        guide: nn.Module,
        world_size: int,
    ):
        super().__init__()
        self.loss = loss
        self.programs = nn.ModuleList([model, guide])
        self.world_size = world_size

    def forward(self, *batch: torch.Tensor) -> torch.Tensor:
        return self.loss(*batch) * self.world_size


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[ProcessGroup]:
    """The group this process trains or evaluates in.

    Under torchrun (``WORLD_SIZE`` > 1 in the environment) this joins the group, NCCL on a
    GPU and gloo on the CPU, and leaves it at the end; a group the caller initialized itself
    is used as it is and left open. Otherwise :data:`SINGLE`.
    """
    if dist.is_available() and dist.is_initialized():
        yield ProcessGroup(dist.get_rank(), dist.get_world_size())
        return
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size == 1:
        yield SINGLE
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # torchrun's store outlives a restart of the worker group, and the gloo addresses of the
    # failed attempt left in it make the new group connect to dead peers (seen with torch
    # 2.14: init_process_group hangs, then times out); each attempt gets keys of its own.
    store, rank, world_size = next(dist.rendezvous("env://"))
    attempt = _env_int("TORCHELASTIC_RESTART_COUNT", 0)
    store = dist.PrefixStore(f"pyro-vae/attempt-{attempt}", store)
    dist.init_process_group(_backend(device), store=store, rank=rank, world_size=world_size)
    try:
        yield ProcessGroup(dist.get_rank(), dist.get_world_size())
        dist.barrier()  # leave together: no rank tears down while another still works
    finally:
        dist.destroy_process_group()
