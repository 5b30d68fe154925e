"""The training loop of ``pyro-vae train``, in parts that each do one thing.

    train()                     resolve the run (new, resumed, restarted by torchrun), then
    Trainer.prepare()           config, data, model/guide, loss, optimizer, resume state, and
                                the batches a step trains on (``TrainingBatches``: images;
                                images and labels; m2's unlabelled and labelled parts)
    Trainer.fit()               epoch 0's evaluation, then for each epoch:
      Trainer.run_epoch()         the epoch's SVI steps (``pyro_vae.svi``), from where it left off
      Trainer.evaluate_row()      validation and test ELBO (m2: and error), a metrics.jsonl row
      callbacks                   what the row is told to (``pyro_vae.callbacks``: the metrics
                                  file, TensorBoard, the caller's own)
      pyro_vae.schedules          the epoch's learning-rate step; early stopping (best.pt)
      CheckpointSchedule          whether a checkpoint is due (``pyro_vae.policies``)
      Trainer.write_checkpoint()  through ``pyro_vae.run_folder.RunFolder``, which knows what
                                  one holds
    FinitenessCheck             a non-finite step (``pyro_vae.policies``): skipped up to
                                ``skip_nonfinite`` times, then the run stops

Training survives interruption: checkpoints are written atomically, also mid-epoch and on
SIGINT/SIGTERM, and ``train(..., resume=True)`` continues from one, bit for bit on the CPU.

Data parallelism (``pyro_vae.distributed``) enters in three places: the shard of each
global batch a rank takes, the loss module (DDP) with the all-reduced loss a step reports,
and the decisions every rank must take alike (a mid-epoch checkpoint, a stop request),
agreed every PROGRESS_EVERY steps. Rank 0 alone evaluates and writes the run folder.

Random streams: ``pyro_vae.streams``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from pyro_vae.callbacks import Callback, default_callbacks
from pyro_vae.compiled import training_loss
from pyro_vae.config import TrainConfig
from pyro_vae.data import ImageData, TrainingBatches
from pyro_vae.distributed import ProcessGroup, is_restart, process_group
from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import elbo_terms, fixed_seed
from pyro_vae.labels import classifies
from pyro_vae.nn import initialize_weights
from pyro_vae.objectives import LatentScale, warmup_beta
from pyro_vae.policies import PROGRESS_EVERY, CheckpointSchedule, FinitenessCheck, stop_requests
from pyro_vae.registry import make_elbo
from pyro_vae.run import (
    Run,
    flushed_denormals,
    prepare,
    resolve_device,
    write_images,
)
from pyro_vae.run_folder import RunFolder
from pyro_vae.schedules import best_epoch, make_scheduler, patience_exhausted, step_scheduler
from pyro_vae.semisupervised import (
    SemiSupervisedBatches,
    label_error,
    training_batches,
    write_labelled,
)
from pyro_vae.streams import Streams
from pyro_vae.svi import (
    NonFiniteLossError,
    adam,
    arguments,
    defers_check,
    nonfinite_report,
    warn_sampled_kl,
)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint of the exact position was written first."""


# ---------------------------------------------------------------------------------------------
# Where training stands


@dataclass
class Position:
    """Where training stands: ``epochs_done`` full epochs, then ``step`` steps of the next."""

    epochs_done: int = 0
    step: int = 0
    order: torch.Tensor | None = None  # the next epoch's minibatch order, once it has begun
    total: torch.Tensor | None = None  # that epoch's summed loss so far (the global batches')
    seconds: float = 0.0  # that epoch's training time so far
    skipped: int = 0  # non-finite steps skipped over the whole run
    skipped_images: int = 0  # the images of that epoch's skipped steps


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
) -> RunFolder:
    """Check that ``config``'s batches fit the training images, then create the run folder
    of a new run (refusing one that exists) or reuse a resumed run's, and write its config
    (and an M2 run's labelled subset) there. Returns the folder."""
    n_train = batches.size
    kind = batches.description
    if config.batch_size > n_train:
        raise UserInputError(
            f"batch_size {config.batch_size} is larger than the {n_train} {kind} images "
            f"of {config.dataset}; use --batch-size {n_train} or less"
        )
    group.check_shards(config.batch_size, n_train, kind)
    folder = RunFolder(run_dir) if run_dir else RunFolder.default_for(config)
    if not resume:
        folder.refuse_existing()
        group.barrier()  # every rank has looked before rank 0 creates it
        if group.is_main:
            folder.create()
    if group.is_main and isinstance(batches, SemiSupervisedBatches):
        write_labelled(folder, batches.labelled.cpu(), data.train_labels.cpu())
    if group.is_main:
        folder.write_config(config)
    return folder


@dataclass
class Trainer:
    """One training run, prepared (:meth:`prepare`) and then trained (:meth:`fit`)."""

    config: TrainConfig
    folder: RunFolder
    group: ProcessGroup
    data: ImageData
    model: nn.Module
    guide: nn.Module
    warmup: LatentScale
    loss: nn.Module  # the loss pyro_vae.compiled chose (its .eager: a JIT replay handed over)
    compile_mode: str
    step_loss: Callable[..., torch.Tensor]  # what a step backpropagates (DDP'd)
    optimizer: torch.optim.Optimizer
    streams: Streams  # the epochs' permutations, binarization and latent draws
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
        batches = training_batches(config, data, model, guide)
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
        folder = open_run_dir(config, run_dir, group, resume, data, batches)
        pair = nn.ModuleDict({"model": model, "guide": guide})
        if state is None:  # a resumed run's parameters come from its checkpoint
            start_networks(config, pair, data.train)
        device = data.device
        streams = Streams.create(config.seed, device, group)
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
            folder=folder,
            group=group,
            data=data,
            model=model,
            guide=guide,
            warmup=warmup,
            loss=loss,
            compile_mode=compile_mode,
            step_loss=step_loss,
            optimizer=optimizer,
            streams=streams,
            schedule=schedule,
            batches=batches,
            scheduler=scheduler,
        )
        streams.start(state)
        if state is not None:
            trainer.restore(state)
        return trainer

    def restore(self, state: dict) -> None:
        """Take a checkpoint's networks, optimizer, schedule, history and position (its
        random streams are ``Streams.start``'s); refuse one that does not fit the run."""
        try:
            self._restore(state)
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            reason = " ".join(str(error).split())[:300]
            raise UserInputError(
                f"the checkpoint in {self.run_dir} does not fit the run of its config.json "
                f"({type(error).__name__}: {reason}); it may be another model's or damaged: "
                "start a new run with --out"
            ) from None

    def _restore(self, state: dict) -> None:
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

    # -- checkpoints and metrics -------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return self.folder.path

    def write_checkpoint(self) -> None:
        """Every rank takes part (their streams are gathered); rank 0 writes the file."""
        streams = self.streams.state()
        if self.group.is_main:
            training = {"position": vars(self.position), "optimizer": self.optimizer.state_dict()}
            if self.scheduler is not None:
                training["scheduler"] = self.scheduler.state_dict()
            pair = (self.model, self.guide)
            self.folder.write_checkpoint(self.config, self.history, pair, **training, **streams)
        self.schedule.written()

    def write_best(self) -> None:
        """best.pt: the parameters of the best validation ELBO so far (early stopping)."""
        if self.group.is_main:
            self.folder.write_best(self.config, self.history, (self.model, self.guide))

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
        has_classifier = classifies(self.guide)  # m2
        columns = ("elbo", "reconstruction", "kl", *(("error",) if has_classifier else ()))
        for split in ("valid", "test"):
            size = self.config.eval_batch_size
            terms = dict.fromkeys(columns)  # None where --valid-size 0 left no validation images
            if len(self.data.split(split)):
                terms.update(elbo_terms(self.model, self.guide, self.data, split, size))
                if has_classifier:  # the share of images argmax q(y|x) labels wrongly
                    terms["error"] = label_error(self.guide, self.data, split, size)
            for name, value in terms.items():
                row[f"{split}_{name}"] = value
        return self.group.from_main(row)

    def skip_or_stop(self, epoch: int, step: int, batch: tuple[torch.Tensor, ...]) -> None:
        """A non-finite step: skipped while ``skip_nonfinite`` allows, else the run stops."""
        self.position.skipped += 1
        self.position.skipped_images += self.position.order.split(self.config.batch_size)[
            step
        ].shape[0]
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

    def fit(self, progress: bool = True, callbacks: Sequence[Callback] = ()) -> Run:
        """Train to ``config.epochs``, evaluating and checkpointing as scheduled; rank 0 calls
        the run's own callbacks (``pyro_vae.callbacks``) and then ``callbacks``."""
        config = self.config
        patience = config.early_stopping
        listeners = [*default_callbacks(self), *callbacks] if self.group.is_main else []
        if not self.history:  # epoch 0, the untrained model, is evaluated and checkpointed
            self.history.append(self.evaluate_row(0, None, None))
            self.write_checkpoint()
            if patience:
                self.write_best()
            for callback in listeners:
                callback.on_epoch_end(self, self.history[-1])
        for callback in listeners:
            callback.on_train_start(self)
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
                for callback in listeners:
                    callback.on_epoch_end(self, self.history[-1])
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
                    trained = {"train": f"{train_elbo:.2f}"} if train_elbo is not None else {}
                    bar.set_postfix(epoch=epoch, **trained, **shown)
                if stopping:
                    raise TrainingInterrupted(
                        f"interrupted after epoch {epoch}; continue with: "
                        f"pyro-vae train --resume {self.run_dir}"
                    )
                if stopping_early:
                    break
        for callback in listeners:
            callback.on_train_end(self)
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
            generator = self.streams.generator
            position.order = torch.randperm(n_train, generator=generator, device=data.device)
            position.total = torch.zeros((), device=data.device)
        batches = position.order.split(config.batch_size)
        start = time.perf_counter() - position.seconds
        for step in range(position.step, len(batches)):
            batch = self.batches.batch(
                batches[step], self.streams.generator, self.streams.binarizer, self.group.shard
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
        taken = n_train - position.skipped_images  # the images of the steps not skipped
        train_elbo = -position.total.item() / taken if taken > 0 else None
        return train_elbo, time.perf_counter() - start

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
    callbacks: Sequence[Callback] = (),
) -> Run:
    """Train the VAE that ``config`` describes and write its run folder
    (``pyro_vae.run_folder``).

    ``run_dir=None`` writes to ``runs/<dataset>-<timestamp>``. With ``resume=True`` the run in
    ``run_dir`` continues from its checkpoint (``config`` may be None, or change only the
    fields in ``RESUMABLE_CHANGES``, such as ``epochs``). Under torchrun every process calls
    this with the same arguments; a worker group that torchrun restarted after a failure
    (``--max-restarts``) continues the run it began in ``run_dir``. Returns the trained
    :class:`Run` (the last parameters; with early stopping, best.pt holds the best).
    Subnormal floats are flushed to zero meanwhile (:func:`pyro_vae.run.flushed_denormals`).
    ``callbacks`` (``pyro_vae.callbacks.Callback``) hear of the run's moments on rank 0, after
    its own metrics file and TensorBoard log.
    """
    with flushed_denormals():
        return _train(config, run_dir, progress, resume, callbacks)


def _train(
    config: TrainConfig | None,
    run_dir,
    progress: bool,
    resume: bool,
    callbacks: Sequence[Callback],
) -> Run:
    if not resume and run_dir is not None and is_restart() and RunFolder(run_dir).holds_run():
        resume = True
    if resume and run_dir is None:
        raise UserInputError("resume needs the run folder to continue")
    if not resume and config is None:
        raise UserInputError("train needs a TrainConfig (or resume=True and a run folder)")
    known = config if config is not None else RunFolder(run_dir).resume_config(None)
    folder = RunFolder(run_dir) if run_dir is not None else RunFolder.default_for(known)
    if not resume:
        folder.refuse_existing()  # before the lock creates the folder
    with process_group(resolve_device(known.device)) as group:
        # Rank 0 holds the folder's lock; the others write nothing there.
        with folder.lock("pyro-vae train") if group.is_main else contextlib.nullcontext():
            state = None
            if resume:
                config, state = folder.resume_state(config)
            trainer = Trainer.prepare(config, folder.path, group, state, resume)
            return trainer.fit(progress, callbacks)
