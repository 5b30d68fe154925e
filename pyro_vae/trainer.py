"""The training loop of ``pyro-vae train``, in parts that each do one thing.

    train()                     resolve the run (new, resumed, restarted by torchrun), then
    Trainer.prepare()           config, data, model/guide, loss, optimizer, resume state, and
                                the batches a step trains on (``TrainingBatches``: images;
                                images and labels; m2's unlabelled and labelled parts)
    Trainer.fit()               epoch 0's evaluation, then for each epoch:
      Trainer.run_epoch()         the epoch's SVI steps (``pyro_vae.svi``), from where it left off
      Trainer.evaluate_row()      validation and test ELBO (m2: and error), a metrics.jsonl row
      pyro_vae.schedules          the epoch's learning-rate step; early stopping (best.pt)
      CheckpointSchedule          whether a checkpoint is due: every N epochs, every M minutes,
                                  at the end, on a stop request
      Trainer.write_checkpoint()  what one holds: parameters, optimizer, position, RNG streams
    FinitenessCheck             a non-finite step: checked at once, or in windows on a GPU;
                                skipped up to ``skip_nonfinite`` times, then the run stops

Training survives interruption: checkpoints are written atomically, also mid-epoch and on
SIGINT/SIGTERM, and ``train(..., resume=True)`` continues from one, bit for bit on the CPU.

Data parallelism (``pyro_vae.distributed``) enters in three places: the shard of each
global batch a rank takes, the loss module (DDP) with the all-reduced loss a step reports,
and the decisions every rank must take alike (a mid-epoch checkpoint, a stop request),
agreed every PROGRESS_EVERY steps. Rank 0 alone evaluates and writes the run folder.

Random streams. One process: one generator draws the epochs' permutations and the dynamic
binarization, and Pyro's latent draws come from torch's global generator, seeded with
``config.seed`` before the networks are built. N processes: the networks are built from that
seed on every rank, and the permutation generator is the same on every rank; each rank's
latent draws and binarization come from streams of its own, seeded from (seed, rank). A
checkpoint holds every rank's streams: resumed on as many processes, a run continues them
bit for bit (on the CPU); on another number, each rank's streams start afresh from (seed,
rank, epochs, step), and a warning says so.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from pyro_vae.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    write_text_atomically,
)
from pyro_vae.compiled import training_loss
from pyro_vae.config import RESUMABLE_CHANGES, TrainConfig, differing_fields
from pyro_vae.data import ImageData, TrainingBatches
from pyro_vae.distributed import ProcessGroup, is_restart, process_group
from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import elbo_terms, fixed_seed, stream_seed
from pyro_vae.nn import initialize_weights
from pyro_vae.objectives import LatentScale, warmup_beta
from pyro_vae.registry import make_elbo
from pyro_vae.run import (
    BEST_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    Run,
    flushed_denormals,
    prepare,
    read_config,
    resolve_device,
    write_images,
)
from pyro_vae.schedules import best_epoch, make_scheduler, patience_exhausted, step_scheduler
from pyro_vae.semisupervised import (
    SemiSupervisedBatches,
    label_error,
    training_batches,
    write_labelled,
)
from pyro_vae.svi import (
    NonFiniteLossError,
    adam,
    arguments,
    defers_check,
    nonfinite_report,
    svi_step,
    svi_step_deferred,
    warn_sampled_kl,
)
from pyro_vae.tracking import IMAGES_EVERY, TensorBoardLog, tensorboard_available

# Steps between progress-bar loss updates, between reads of deferred finiteness flags, and
# between the ranks' agreements on a mid-epoch checkpoint or stop.
PROGRESS_EVERY = 25


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint of the exact position was written first."""


# ---------------------------------------------------------------------------------------------
# The run folder and what a resumed run starts from


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.dataset}-{datetime.now():%Y%m%d-%H%M%S}"


def holds_run(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT_NAME).exists() or (run_dir / CONFIG_NAME).exists()


def refuse_existing_run(run_dir: Path) -> None:
    if holds_run(run_dir):
        raise UserInputError(
            f"{run_dir} already holds a run; choose another --out, or continue it with --resume"
        )


def create_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir``; refuse one that cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserInputError(f"cannot write to run folder {run_dir} ({error.strerror})") from None
    return run_dir


def resume_config(run_dir: Path, asked: TrainConfig | None) -> TrainConfig:
    """The stored config of ``run_dir``, with the changes ``asked`` may make on resume."""
    if not run_dir.is_dir():
        raise UserInputError(f"cannot resume: run folder {run_dir} does not exist")
    stored = read_config(run_dir)
    if asked is None:
        return stored
    fixed = differing_fields(stored, asked, ignore=RESUMABLE_CHANGES)
    if fixed:
        raise UserInputError(
            f"cannot resume {run_dir} with a different model or training config "
            f"({'; '.join(fixed)}); only {', '.join(RESUMABLE_CHANGES)} may change"
        )
    return asked


def resume_state(run_dir: Path, asked: TrainConfig | None) -> tuple[TrainConfig, dict | None]:
    """The config a resumed run continues with, and its checkpoint (None when the run
    stopped before its first checkpoint: it then starts afresh from its config.json)."""
    config = resume_config(run_dir, asked)
    checkpoint = run_dir / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint) if checkpoint.exists() else None
    stored = TrainConfig.from_dict(state["config"]) if state else config
    differ = differing_fields(stored, read_config(run_dir), ignore=RESUMABLE_CHANGES)
    if differ:
        raise UserInputError(
            f"the checkpoint and config.json in {run_dir} disagree ({'; '.join(differ)})"
        )
    return config, state


@dataclass
class Position:
    """Where training stands: ``epochs_done`` full epochs, then ``step`` steps of the next."""

    epochs_done: int = 0
    step: int = 0
    order: torch.Tensor | None = None  # the next epoch's minibatch order, once it has begun
    total: torch.Tensor | None = None  # that epoch's summed loss so far (the global batches')
    seconds: float = 0.0  # that epoch's training time so far
    skipped: int = 0  # non-finite steps skipped over the whole run


# ---------------------------------------------------------------------------------------------
# Policies: when to checkpoint, what a non-finite step leads to, when to stop


@dataclass
class CheckpointSchedule:
    """When a checkpoint is written: after every ``every`` epochs and the last one, after
    ``minutes`` minutes since the last one (mid-epoch too), and when a stop is requested."""

    every: int
    minutes: float | None
    last_epoch: int
    written_at: float = field(default_factory=time.monotonic)

    def mid_epoch_due(self) -> bool:
        elapsed = time.monotonic() - self.written_at
        return self.minutes is not None and elapsed >= 60 * self.minutes

    def epoch_end_due(self, epoch: int, stopping: bool) -> bool:
        return epoch % self.every == 0 or epoch == self.last_epoch or stopping

    def written(self) -> None:
        self.written_at = time.monotonic()


class FinitenessCheck:
    """Takes SVI steps and acts on the non-finite ones (NaN or inf in loss or gradient).

    Per step (the CPU; any device with ``--clip-norm``): each step's loss and gradients are
    checked at once, and a bad step's update is not made. Deferred (a GPU with the fused
    Adam, :func:`~pyro_vae.svi.defers_check`): nothing waits for the device; the fused
    optimizer skips a bad update on the device itself, and the flags are read every
    PROGRESS_EVERY steps and before a checkpoint (:meth:`settle`), so a bad step is
    reported up to PROGRESS_EVERY steps late, its update already skipped. Either way
    ``on_nonfinite(epoch, step, batch)`` decides whether the run goes on.
    """

    def __init__(
        self,
        defer: bool,
        clip_norm: float | None,
        global_loss: Callable[[torch.Tensor], torch.Tensor] | None,
        on_nonfinite: Callable[[int, int, tuple[torch.Tensor, ...]], None],
    ):
        self.defer = defer
        self.clip_norm = clip_norm
        self.global_loss = global_loss
        self.on_nonfinite = on_nonfinite
        self.pending: list[tuple] = []  # (epoch, step, flag, batch) per deferred step

    def step(
        self,
        loss_fn: Callable[..., torch.Tensor],
        optimizer: torch.optim.Optimizer,
        batch: tuple[torch.Tensor, ...],
        epoch: int,
        step: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One step on ``batch`` (the loss's arguments); returns its loss and what it adds
        to the epoch's total (None: nothing)."""
        if self.defer:
            loss, found = svi_step_deferred(loss_fn, optimizer, batch, self.global_loss)
            counted = torch.where(found > 0, 0.0, loss.detach())
            self.pending.append((epoch, step, found, batch))
            if len(self.pending) == PROGRESS_EVERY:
                self.settle()
            return loss, counted
        global_loss = self.global_loss
        loss, taken = svi_step(loss_fn, optimizer, batch, self.clip_norm, global_loss=global_loss)
        if not taken:
            self.on_nonfinite(epoch, step, batch)
            return loss, None
        return loss, loss.detach()

    def settle(self) -> None:
        """Read the deferred flags (one wait for the device) and act on the bad steps."""
        if not self.pending:
            return
        flags = torch.stack([found for _, _, found, _ in self.pending]).tolist()
        waiting = self.pending.copy()
        self.pending.clear()
        for (epoch, step, _, batch), bad in zip(waiting, flags):
            if bad:
                self.on_nonfinite(epoch, step, batch)


@contextlib.contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM, so the loop can checkpoint before it stops.

    A second SIGINT raises KeyboardInterrupt at once. Outside the main thread (where Python
    allows no signal handlers) the event simply never fires.
    """
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handle(signum, frame):
        if event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        event.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------
# The loop


def build_loss(
    config: TrainConfig,
    data: ImageData,
    model: nn.Module,
    guide: nn.Module,
    warmup: LatentScale,
    check_batch: torch.Tensor | tuple[torch.Tensor, ...],
) -> tuple[nn.Module, str]:
    """The training loss module (JIT-traced or eager, ``pyro_vae.compiled``) and its mode.

    ``check_batch``: the arguments of a training step's loss (images, and labels for the
    class-conditional models). The pair is checked once with Pyro's validation on (site
    shapes, model/guide match); the hot loop then runs without it (support was checked
    once on the whole data set).
    """
    check_batch = arguments(check_batch)
    objective = make_elbo(config, data.train.shape[0])
    # KL warm-up and β-VAE scale the latent sites of model and guide by β (set at each
    # epoch's start).
    if config.kl_warmup_epochs or config.beta != 1:
        program = (warmup(model), warmup(guide))
        constants = lambda: (warmup.beta,)  # noqa: E731 - β is frozen into a JIT trace
    else:
        program, constants = (model, guide), tuple
    probe = [t[:8] for t in check_batch]  # a training batch (there may be no validation split)
    # With gradients: TraceEnum_ELBO (m2) refuses a differentiable loss that has none.
    with pyro.validation_enabled(True), fixed_seed(0, data.device):  # no RNG moves
        objective(*program)(*probe)
        if config.elbo == "meanfield":
            warn_sampled_kl(model, guide, *probe)
    named = list(nn.ModuleDict({"model": model, "guide": guide}).named_parameters())
    with pyro.validation_enabled(False):
        return training_loss(objective, *program, check_batch, named, config.compile, constants)


def start_networks(config: TrainConfig, pair: nn.ModuleDict, train_images: torch.Tensor) -> None:
    """A new run's first weights where ``config`` asks for other than torch's: the
    ``weight_init`` scheme in every layer, then, for ``output_bias`` data-logit, the
    decoder's output bias at logit(mean training pixel), clipped to [0.001, 0.999] as in
    Burda et al.'s code (datasets.py, get_train_bias_np): the untrained decoder then
    draws each pixel at its average rate rather than at ½. ``pair``: {"model", "guide"}."""
    initialize_weights(pair, config.weight_init, config.seed)
    if config.output_bias == "data-logit":  # the splits hold grey values 0..255
        mean = (train_images.float().mean(0) / 255).clamp(0.001, 0.999)
        pair["model"].decoder.start_output_at(torch.logit(mean))


def open_run_dir(
    config: TrainConfig,
    run_dir: Path | None,
    group: ProcessGroup,
    resume: bool,
    data: ImageData,
    batches: TrainingBatches,
) -> Path:
    """Check that ``config``'s batches fit the training images, then create the run folder
    of a new run (refusing one that exists) or reuse a resumed run's, and write its config
    (and an M2 run's labelled subset) there. Returns the folder."""
    n_train = batches.size
    kind = "unlabelled training" if config.model == "m2" else "training"  # what an epoch passes
    if config.batch_size > n_train:
        raise UserInputError(
            f"batch_size {config.batch_size} is larger than the {n_train} {kind} images "
            f"of {config.dataset}; use --batch-size {n_train} or less"
        )
    group.check_shards(config.batch_size, n_train, kind)
    if not resume:
        run_dir = Path(run_dir) if run_dir else default_run_dir(config)
        refuse_existing_run(run_dir)
        group.barrier()  # every rank has looked before rank 0 creates it
        if group.is_main:
            create_run_dir(run_dir)
    if group.is_main and isinstance(batches, SemiSupervisedBatches):
        write_labelled(run_dir, batches.labelled.cpu(), data.train_labels.cpu())
    if group.is_main:
        write_text_atomically(run_dir / CONFIG_NAME, json.dumps(config.to_dict(), indent=2) + "\n")
    return run_dir


@dataclass
class Trainer:
    """One training run, prepared (:meth:`prepare`) and then trained (:meth:`fit`)."""

    config: TrainConfig
    run_dir: Path
    group: ProcessGroup
    data: ImageData
    model: nn.Module
    guide: nn.Module
    warmup: LatentScale
    loss: nn.Module  # the loss pyro_vae.compiled chose (its .eager: a JIT replay handed over)
    compile_mode: str
    step_loss: Callable[..., torch.Tensor]  # what a step backpropagates (DDP'd)
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the epochs' permutations: the same on every rank
    binarizer: torch.Generator  # dynamic binarization: this rank's own (one process: generator)
    schedule: CheckpointSchedule
    batches: TrainingBatches  # what a step trains on (images; images and labels)
    scheduler: object = None  # the learning-rate schedule (pyro_vae.schedules), if any
    history: list[dict] = field(default_factory=list)
    position: Position = field(default_factory=Position)

    def __post_init__(self) -> None:
        defer = defers_check(self.data.device, self.optimizer, self.config.clip_norm)
        global_loss = self.group.global_loss if self.group.is_parallel else None
        self.finiteness = FinitenessCheck(
            defer, self.config.clip_norm, global_loss, self.skip_or_stop
        )

    @classmethod
    def prepare(
        cls,
        config: TrainConfig,
        run_dir: Path | None,
        group: ProcessGroup,
        state: dict | None = None,
        resume: bool = False,
    ) -> Trainer:
        """Build the registry's model/guide and the data ``config`` names, then :meth:`assemble`
        the run around them; ``state`` is the checkpoint a resumed run continues."""
        pyro.clear_param_store()  # stale parameters of an earlier model must not shadow these
        pyro.set_rng_seed(config.seed)  # before the networks are built: their initialization too
        data, model, guide = prepare(config)
        batches = training_batches(config, data)
        return cls.assemble(config, run_dir, group, data, model, guide, state, resume, batches)

    @classmethod
    def assemble(
        cls,
        config: TrainConfig,
        run_dir: Path | None,
        group: ProcessGroup,
        data: ImageData,
        model: nn.Module,
        guide: nn.Module,
        state: dict | None = None,
        resume: bool = False,
        batches: TrainingBatches | None = None,
    ) -> Trainer:
        """Everything a run needs around a built model/guide pair and its data: the run
        folder, random streams, the loss, optimizer and schedules, the resumed state.
        ``batches``: what a step trains on (default: the training images alone)."""
        batches = batches or TrainingBatches(data)
        run_dir = open_run_dir(config, run_dir, group, resume, data, batches)
        pair = nn.ModuleDict({"model": model, "guide": guide})
        if state is None:  # a resumed run's parameters come from its checkpoint
            start_networks(config, pair, data.train)
        device = data.device
        generator = torch.Generator(device=device).manual_seed(config.seed)
        binarizer = torch.Generator(device=device) if group.is_parallel else generator
        warmup = LatentScale(1.0)
        # A training-sized batch (this rank's shard of one), binarized by a generator of its
        # own: the run's streams stay put.
        first = torch.arange(min(config.batch_size, batches.size), device=device)
        own = torch.Generator(device=device).manual_seed(0)
        check_batch = batches.batch(first, own, own, group.shard)
        loss, compile_mode = build_loss(config, data, model, guide, warmup, check_batch)
        step_loss = group.loss_module(loss, model, guide, check_batch)
        optimizer = adam(  # shared parameters once
            list(pair.parameters()),
            config.lr,
            eps=config.adam_eps,
            variant=config.optimizer,
            beta1=config.adam_beta1,
        )
        schedule = CheckpointSchedule(
            config.checkpoint_every, config.checkpoint_minutes, config.epochs
        )
        scheduler = make_scheduler(
            config.lr_schedule, optimizer, config.lr_decay, config.lr_patience
        )
        trainer = cls(
            config=config,
            run_dir=run_dir,
            group=group,
            data=data,
            model=model,
            guide=guide,
            warmup=warmup,
            loss=loss,
            compile_mode=compile_mode,
            step_loss=step_loss,
            optimizer=optimizer,
            generator=generator,
            binarizer=binarizer,
            schedule=schedule,
            batches=batches,
            scheduler=scheduler,
        )
        trainer.start_streams(state)
        if state is not None:
            trainer.restore(state)
        return trainer

    def restore(self, state: dict) -> None:
        """Take a checkpoint's networks, optimizer, schedule, history and position (its
        random streams are :meth:`start_streams`'s)."""
        self.model.load_state_dict(state["model"])
        self.guide.load_state_dict(state["guide"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.history = list(state["history"])
        position = Position(**state["position"])
        device = self.data.device
        position.order = position.order.to(device) if position.order is not None else None
        position.total = position.total.to(device) if position.total is not None else None
        self.position = position

    # -- random streams ----------------------------------------------------------------------

    def start_streams(self, state: dict | None) -> None:
        """Seed or restore the run's random streams (module docstring, "Random streams")."""
        group, seed = self.group, self.config.seed
        if state is None:
            if group.is_parallel:
                self._seed_own_streams(seed, group.rank)
            return
        restore_rng(state["rng"], self.generator)
        stored = state.get("world_size", 1)
        if stored == group.world_size:
            if group.is_parallel:
                own = state["rank_streams"][group.rank]
                torch.set_rng_state(own["torch"])
                if own["cuda"] is not None:
                    torch.cuda.set_rng_state(own["cuda"], self.data.device)
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
        self._seed_own_streams(seed, group.rank, where["epochs_done"], where["step"])

    def _seed_own_streams(self, *keys: int) -> None:
        torch.manual_seed(stream_seed(*keys, 0))
        if self.binarizer is not self.generator:
            self.binarizer.manual_seed(stream_seed(*keys, 1))

    def _streams_state(self) -> dict:
        """The RNG part of a checkpoint (a collective under torchrun: every rank calls it)."""
        device = self.data.device
        own = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "binarize": self.binarizer.get_state(),
        }
        streams = self.group.gather(own)
        state = {"rng": capture_rng(self.generator), "world_size": self.group.world_size}
        if self.group.is_parallel:
            state["rank_streams"] = streams
        return state

    # -- checkpoints and metrics -------------------------------------------------------------

    def write_checkpoint(self) -> None:
        """Every rank takes part (their streams are gathered); rank 0 writes the file."""
        streams = self._streams_state()
        if self.group.is_main:
            state = {
                "config": self.config.to_dict(),
                "epoch": self.position.epochs_done,
                "position": vars(self.position),
                "history": self.history,
                "model": self.model.state_dict(),
                "guide": self.guide.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                **streams,
            }
            if self.scheduler is not None:
                state["scheduler"] = self.scheduler.state_dict()
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, state)
        self.schedule.written()

    def write_best(self) -> None:
        """best.pt: the parameters of the best validation ELBO so far (early stopping)."""
        if self.group.is_main:
            state = {
                "config": self.config.to_dict(),
                "epoch": self.history[-1]["epoch"],
                "history": self.history,
                "model": self.model.state_dict(),
                "guide": self.guide.state_dict(),
            }
            save_checkpoint(self.run_dir / BEST_NAME, state)

    def write_metrics(self) -> None:
        # Rewritten whole from the history, so a resumed run's file matches its checkpoint.
        if self.group.is_main:
            rows = "".join(json.dumps(row) + "\n" for row in self.history)
            write_text_atomically(self.run_dir / METRICS_NAME, rows)

    def evaluate_row(self, epoch: int, train_elbo: float | None, seconds: float | None) -> dict:
        """One row of metrics.jsonl. train_elbo is minus the training objective (β-weighted
        during warm-up; the IWAE bound under --elbo iwae); the validation and test columns are
        always Trace_ELBO, computed by rank 0 alone and sent to the others, so that every
        rank takes the decisions that depend on them alike."""
        row = {"epoch": epoch, "train_elbo": train_elbo, "seconds": seconds}
        # The loss that ran: "eager" too once a failed JIT replay has handed over.
        fell_back = self.compile_mode == "jit" and self.loss.eager is not None
        row["compile"] = "eager" if fell_back else self.compile_mode
        config = self.config
        row["kl_weight"] = (
            warmup_beta(epoch, config.kl_warmup_epochs, config.beta) if epoch else None
        )
        if self.scheduler is not None:  # the rate the epoch trained with
            row["lr"] = self.optimizer.param_groups[0]["lr"] if epoch else None
        if not self.group.is_main:  # rank 0 evaluates; every rank keeps its row
            return self.group.from_main(None)
        classifies = getattr(self.guide, "classifier", None) is not None  # m2
        columns = ("elbo", "reconstruction", "kl", *(("error",) if classifies else ()))
        for split in ("valid", "test"):
            size = self.config.eval_batch_size
            terms = dict.fromkeys(columns)  # None where --valid-size 0 left no validation images
            if len(self.data.split(split)):
                terms.update(elbo_terms(self.model, self.guide, self.data, split, size))
                if classifies:  # the share of images argmax q(y|x) labels wrongly
                    terms["error"] = label_error(self.guide, self.data, split, size)
            for name, value in terms.items():
                row[f"{split}_{name}"] = value
        return self.group.from_main(row)

    def tensorboard_log(self) -> TensorBoardLog | None:
        """Rank 0's TensorBoard writer, where asked for and the package is installed."""
        wanted = self.config.tensorboard and self.group.is_main and tensorboard_available()
        return TensorBoardLog(self.run_dir, self.config) if wanted else None

    def to_tensorboard(self, tracker: TensorBoardLog | None) -> None:
        """The newest metrics row, and every IMAGES_EVERY epochs and at the last, images."""
        if tracker is None:
            return
        row = self.history[-1]
        tracker.epoch(row)
        if row["epoch"] % IMAGES_EVERY == 0 or row["epoch"] == self.config.epochs:
            test_images = next(self.data.eval_batches("test", 32), None)
            if test_images is not None:
                labels = self.data.test_labels[:32]
                tracker.images(row["epoch"], self.model, self.guide, test_images, labels)

    def skip_or_stop(self, epoch: int, step: int, batch: tuple[torch.Tensor, ...]) -> None:
        """A non-finite step: skipped while ``skip_nonfinite`` allows, else the run stops."""
        self.position.skipped += 1
        report = nonfinite_report(self.model, self.guide, *self.batches.program_arguments(batch))
        where = f"epoch {epoch}, step {step + 1}: {report}"
        if self.position.skipped > self.config.skip_nonfinite:
            raise NonFiniteLossError(
                f"non-finite loss or gradient at {where}; the last good checkpoint "
                f"in {self.run_dir} is left as it was; try a lower --lr, --clip-norm, or "
                f"--skip-nonfinite N"
            )
        warnings.warn(f"skipped a non-finite step at {where}", stacklevel=1)

    # -- training ----------------------------------------------------------------------------

    def fit(self, progress: bool = True) -> Run:
        """Train to ``config.epochs``, evaluating and checkpointing as scheduled."""
        config = self.config
        patience = config.early_stopping
        tracker = self.tensorboard_log()
        if not self.history:  # epoch 0, the untrained model, is evaluated and checkpointed
            self.history.append(self.evaluate_row(0, None, None))
            self.write_checkpoint()
            if patience:
                self.write_best()
            self.to_tensorboard(tracker)
        self.write_metrics()
        steps_per_epoch = math.ceil(self.batches.size / config.batch_size)
        done = min(self.position.epochs_done, config.epochs) * steps_per_epoch + self.position.step
        bar = tqdm(
            total=max(config.epochs * steps_per_epoch, done),
            initial=done,
            disable=not (progress and self.group.is_main),
            unit="step",
            mininterval=0.5,
            dynamic_ncols=True,
        )
        self.schedule.written()
        with bar, pyro.validation_enabled(False), stop_requests() as stop:
            for epoch in range(self.position.epochs_done + 1, config.epochs + 1):
                if patience_exhausted(self.history, patience):
                    break  # a resumed run that had stopped early
                train_elbo, seconds = self.run_epoch(epoch, bar, stop)
                self.position = Position(epochs_done=epoch, skipped=self.position.skipped)
                self.history.append(self.evaluate_row(epoch, train_elbo, seconds))
                self.write_metrics()
                self.to_tensorboard(tracker)
                step_scheduler(self.scheduler, self.history[-1]["valid_elbo"])
                if patience and best_epoch(self.history) == epoch:
                    self.write_best()
                stopping_early = patience_exhausted(self.history, patience)
                (stopping,) = self.group.any(stop.is_set())
                if self.schedule.epoch_end_due(epoch, stopping or stopping_early):
                    self.write_checkpoint()
                if not bar.disable:
                    valid = self.history[-1]["valid_elbo"]
                    shown = {"valid": f"{valid:.2f}"} if valid is not None else {}
                    bar.set_postfix(epoch=epoch, train=f"{train_elbo:.2f}", **shown)
                if stopping:
                    raise TrainingInterrupted(
                        f"interrupted after epoch {epoch}; continue with: "
                        f"pyro-vae train --resume {self.run_dir}"
                    )
                if stopping_early:
                    break
        if tracker is not None:
            tracker.close(self.history)
        run = Run(config, self.model, self.guide, self.data, self.run_dir, self.history)
        if self.group.is_main:
            write_images(run, self.run_dir)
        return run

    def run_epoch(self, epoch: int, bar: tqdm, stop: threading.Event) -> tuple[float, float]:
        """The steps of ``epoch`` from ``position``; returns (train ELBO per image, seconds)."""
        config, data, position = self.config, self.data, self.position
        self.warmup.beta = warmup_beta(epoch, config.kl_warmup_epochs, config.beta)
        n_train = self.batches.size
        if position.order is None:
            position.order = torch.randperm(n_train, generator=self.generator, device=data.device)
            position.total = torch.zeros((), device=data.device)
        batches = position.order.split(config.batch_size)
        start = time.perf_counter() - position.seconds
        for step in range(position.step, len(batches)):
            batch = self.batches.batch(
                batches[step], self.generator, self.binarizer, self.group.shard
            )
            loss, counted = self.finiteness.step(self.step_loss, self.optimizer, batch, epoch, step)
            if counted is not None:
                position.total += counted
            position.step = step + 1
            bar.update()
            if step % PROGRESS_EVERY == 0 and not bar.disable:
                per_image = loss.item() / batches[step].shape[0]
                bar.set_postfix(epoch=epoch, loss=f"{per_image:.2f}")
            if position.step == len(batches):
                break
            checkpoint, stopping = self.pause_requested(stop, step)
            if checkpoint:
                self.finiteness.settle()
                position.seconds = time.perf_counter() - start
                self.write_checkpoint()
                if stopping:
                    raise TrainingInterrupted(
                        f"interrupted in epoch {epoch} after step {position.step}; saved the "
                        f"exact position; continue with: pyro-vae train --resume {self.run_dir}"
                    )
        self.finiteness.settle()
        return -position.total.item() / n_train, time.perf_counter() - start

    def pause_requested(self, stop: threading.Event, step: int) -> tuple[bool, bool]:
        """(write a mid-epoch checkpoint now, then stop): asked by a signal or the schedule.
        Under torchrun the ranks agree on both every PROGRESS_EVERY steps."""
        stopping, due = stop.is_set(), self.schedule.mid_epoch_due()
        if self.group.is_parallel:
            if (step + 1) % PROGRESS_EVERY:
                return False, False
            stopping, due = self.group.any(stopping, due)
        return stopping or due, stopping


def train(
    config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
) -> Run:
    """Train the VAE that ``config`` describes and write its run folder (see ``pyro_vae.run``).

    ``run_dir=None`` writes to ``runs/<dataset>-<timestamp>``. With ``resume=True`` the run in
    ``run_dir`` continues from its checkpoint (``config`` may be None, or change only the
    fields in ``RESUMABLE_CHANGES``, such as ``epochs``). Under torchrun every process calls
    this with the same arguments; a worker group that torchrun restarted after a failure
    (``--max-restarts``) continues the run it began in ``run_dir``. Returns the trained
    :class:`Run` (the last parameters; with early stopping, best.pt holds the best).
    Subnormal floats are flushed to zero meanwhile (:func:`pyro_vae.run.flushed_denormals`).
    """
    with flushed_denormals():
        return _train(config, run_dir, progress, resume)


def _train(config: TrainConfig | None, run_dir, progress: bool, resume: bool) -> Run:
    if not resume and run_dir is not None and is_restart() and holds_run(Path(run_dir)):
        resume = True
    state = None
    if resume:
        if run_dir is None:
            raise UserInputError("resume needs the run folder to continue")
        run_dir = Path(run_dir)
        config, state = resume_state(run_dir, config)
    elif config is None:
        raise UserInputError("train needs a TrainConfig (or resume=True and a run folder)")
    with process_group(resolve_device(config.device)) as group:
        trainer = Trainer.prepare(config, run_dir, group, state, resume)
        return trainer.fit(progress)
