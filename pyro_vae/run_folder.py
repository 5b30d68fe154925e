"""A run folder: the one place that knows its files' names and layouts.

    RUN_DIR/config.json                   the TrainConfig, as plain JSON
    RUN_DIR/checkpoint.pt                 the last checkpoint (:meth:`RunFolder.write_checkpoint`)
    RUN_DIR/best.pt                       with --early-stopping: the best validation ELBO's
                                          parameters (:meth:`RunFolder.write_best`)
    RUN_DIR/metrics.jsonl                 one JSON row per epoch: train/valid/test ELBO, seconds
    RUN_DIR/labelled.json                 m2: which training images kept their label
    RUN_DIR/evaluation.json               ``pyro-vae evaluate``'s summary
    RUN_DIR/evaluation_per_datapoint.csv  its per-image estimates
    RUN_DIR/khat.png                      their PSIS k̂
    RUN_DIR/evaluation-ais.json, evaluation-ais_per_datapoint.csv, evaluation-bdmc.json:
                                          ``evaluate --method ais/bdmc`` (never over the IS files)
    RUN_DIR/samples.png, reconstructions.png, curves.png, viz/, report.html: images

Everything else asks a :class:`RunFolder` (anchor: pythae's ``save`` and
``AutoModel.load_from_folder``): creating, refusing or reusing a folder, what a checkpoint
holds (written here, read here), what a resumed run may change, and where an evaluation goes.

A checkpoint (``pyro_vae.checkpoint``: atomic, loaded with ``weights_only=True``) holds
``config``, ``epoch``, ``history``, ``model`` and ``guide`` (state dicts); the last one also
``position`` (``pyro_vae.trainer.Position``), ``optimizer``, the random streams (``rng``,
``world_size``, under torchrun ``rank_streams``) and, with a learning-rate schedule,
``scheduler``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from pyro_vae.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    save_checkpoint,
    write_text_atomically,
)
from pyro_vae.config import RESUMABLE_CHANGES, TrainConfig, differing_fields
from pyro_vae.errors import UserInputError

CONFIG_NAME = "config.json"
BEST_NAME = "best.pt"
METRICS_NAME = "metrics.jsonl"
LABELLED_NAME = "labelled.json"
EVALUATION_NAME = "evaluation.json"
PER_IMAGE_NAME = "evaluation_per_datapoint.csv"
AIS_NAME = "evaluation-ais.json"  # and its CSV, evaluation-ais_per_datapoint.csv
BDMC_NAME = "evaluation-bdmc.json"
KHAT_NAME = "khat.png"
CHECKPOINTS = ("best", "last")  # which parameters load_run takes
LOCK_NAME = ".lock"
# What else may already be in a folder a new run is created in: nothing a user wrote
CREATABLE_CONTENTS = {LOCK_NAME}


@dataclass(frozen=True)
class RunFolder:
    """The folder of one run, at ``path``."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def default_for(cls, config: TrainConfig) -> RunFolder:
        """``runs/<dataset>-<timestamp>``: where a run goes when no folder is named."""
        return cls(Path("runs") / f"{config.dataset}-{datetime.now():%Y%m%d-%H%M%S}")

    # -- the files ---------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def checkpoint_file(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def best_file(self) -> Path:
        return self.path / BEST_NAME

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def labelled_file(self) -> Path:
        return self.path / LABELLED_NAME

    @property
    def evaluation_file(self) -> Path:
        return self.path / EVALUATION_NAME

    @property
    def per_image_file(self) -> Path:
        return self.path / PER_IMAGE_NAME

    @property
    def khat_file(self) -> Path:
        return self.path / KHAT_NAME

    # -- creating, refusing, reusing ---------------------------------------------------------

    def holds_run(self) -> bool:
        return self.checkpoint_file.exists() or self.config_file.exists()

    def refuse_existing(self) -> None:
        """Refuse a folder a new run must not be written into: one that holds a run, one
        that holds anything else (a user's files would be overwritten), the root or the
        home folder."""
        if self.holds_run():
            raise UserInputError(
                f"{self.path} already holds a run; choose another --out, or continue it with "
                "--resume"
            )
        resolved = self.path.expanduser().resolve()
        for special, what in ((Path(resolved.anchor), "root"), (Path.home().resolve(), "home")):
            if resolved == special:
                raise UserInputError(
                    f"--out {self.path} is the {what} folder; give a folder of the run's own, "
                    "such as runs/NAME"
                )
        if self.path.is_dir():
            others = sorted(p.name for p in self.path.iterdir() if p.name not in CREATABLE_CONTENTS)
            if others:
                raise UserInputError(
                    f"{self.path} is not empty and holds no run ({', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}); choose a new or empty folder for --out"
                )

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the folder's lock (``RUN_DIR/.lock``, an OS-level ``flock``) while ``command``
        writes to it; a second writer is refused, naming the process that holds it. The lock
        goes with the process: a killed run leaves nothing to clean up. Stale temporary
        files of an interrupted write (``.NAME.tmp-PID`` of a process no longer alive) are
        removed once the lock is held."""
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK_NAME, "a+")
        except OSError as error:
            raise UserInputError(
                f"cannot write to run folder {self.path} ({error.strerror})"
            ) from None
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise UserInputError(
                    f"{self.path} is in use by {holder}; wait for it to finish, or stop it "
                    "(it checkpoints on SIGTERM), then try again"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()} ({command})\n")
            handle.flush()
            self.remove_stale_temporary_files()
            yield
        finally:
            handle.close()  # releases the lock
            if created and [p.name for p in self.path.iterdir()] == [LOCK_NAME]:
                # refused before it wrote anything: leave no folder behind
                (self.path / LOCK_NAME).unlink(missing_ok=True)
                self.path.rmdir()

    def remove_stale_temporary_files(self) -> list[Path]:
        """``.NAME.tmp-PID`` files whose writer (PID) is no longer running."""
        removed = []
        for path in self.path.glob(".*.tmp-*"):
            pid = path.name.rsplit("tmp-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def create(self) -> RunFolder:
        """Create the folder; refuse one that cannot be written."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise UserInputError(
                f"cannot write to run folder {self.path} ({error.strerror})"
            ) from None
        return self

    # -- config and metrics ------------------------------------------------------------------

    def read_config(self) -> TrainConfig:
        path = self.config_file
        if not path.is_file():
            raise UserInputError(
                f"{self.path} is not a run folder (no {CONFIG_NAME}); train one first"
            )
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserInputError(f"{path} is not valid JSON ({error})") from None
        if not isinstance(values, dict):
            raise UserInputError(f"{path} does not hold a JSON object")
        return TrainConfig.from_dict(values)

    def read_existing_config(self) -> TrainConfig:
        """The config of a folder that must exist (read_config, once it is known to)."""
        if not self.path.is_dir():
            raise UserInputError(f"run folder {self.path} does not exist")
        return self.read_config()

    def write_config(self, config: TrainConfig) -> None:
        write_text_atomically(self.config_file, json.dumps(config.to_dict(), indent=2) + "\n")

    def read_history(self) -> list[dict]:
        if not self.metrics_file.is_file():
            return []
        rows = []
        for number, line in enumerate(self.metrics_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UserInputError(
                    f"{self.metrics_file} line {number} is not valid JSON ({error.msg}); "
                    f"pyro-vae train --resume {self.path} rewrites the file from the checkpoint"
                ) from None
        return rows

    def write_history(self, history: list[dict]) -> None:
        """metrics.jsonl, rewritten whole (a resumed run's file matches its checkpoint);
        valid JSON: a non-finite number is written as null."""
        rows = "".join(json.dumps(_finite_or_none(row), allow_nan=False) + "\n" for row in history)
        write_text_atomically(self.metrics_file, rows)

    def read_evaluation(self, method: str = "is") -> dict | None:
        """evaluation.json (``method="ais"``: evaluation-ais.json), or None where the run
        has none."""
        path = self.evaluation_file if method == "is" else self.path / AIS_NAME
        if not path.is_file():
            return None
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserInputError(
                f"{path} is not valid JSON ({error}); run pyro-vae evaluate {self.path} again"
            ) from None
        if not isinstance(values, dict):
            raise UserInputError(f"{path} does not hold a JSON object")
        return values

    # -- checkpoints -------------------------------------------------------------------------

    def write_checkpoint(self, config: TrainConfig, history: list[dict], pair, **training) -> None:
        """checkpoint.pt: the pair's parameters after ``history[-1]``'s epoch (and
        ``training["position"]`` inside the next), with what training continues from:
        ``position``, ``optimizer``, the random streams and, if any, ``scheduler``."""
        state = self._parameters(config, training["position"]["epochs_done"], history, pair)
        save_checkpoint(self.checkpoint_file, {**state, **training})

    def write_best(self, config: TrainConfig, history: list[dict], pair) -> None:
        """best.pt: the parameters of the best validation ELBO so far (early stopping)."""
        state = self._parameters(config, history[-1]["epoch"], history, pair)
        save_checkpoint(self.best_file, state)

    @staticmethod
    def _parameters(config: TrainConfig, epoch: int, history: list[dict], pair) -> dict:
        model, guide = pair
        return {
            "config": config.to_dict(),
            "epoch": epoch,
            "history": history,
            "model": model.state_dict(),
            "guide": guide.state_dict(),
        }

    def read_parameters(self, checkpoint: str = "best") -> tuple[dict, str]:
        """A checkpoint's state and the line saying whose parameters it holds ("epoch 55,
        best validation ELBO (best.pt)"): best.pt for ``"best"`` where early stopping wrote
        one, else the last checkpoint."""
        if checkpoint not in CHECKPOINTS:
            raise UserInputError(
                f"unknown checkpoint {checkpoint!r}; valid values: {', '.join(CHECKPOINTS)}"
            )
        best = checkpoint == "best" and self.best_file.is_file()
        path = self.best_file if best else self.checkpoint_file
        state = load_checkpoint(path)
        batch_size = TrainConfig.from_dict(state["config"]).batch_size
        which = "best validation ELBO" if best else "last"
        return state, f"{trained_for(state, batch_size)}, {which} ({path.name})"

    def resume_state(self, asked: TrainConfig | None) -> tuple[TrainConfig, dict | None]:
        """The config a resumed run continues with and its checkpoint (None when the run
        stopped before its first checkpoint: it then starts afresh from its config.json).
        ``asked`` may change only the fields of ``RESUMABLE_CHANGES``."""
        config = self.resume_config(asked)
        state = load_checkpoint(self.checkpoint_file) if self.checkpoint_file.exists() else None
        stored = TrainConfig.from_dict(state["config"]) if state else config
        differ = differing_fields(stored, self.read_config(), ignore=RESUMABLE_CHANGES)
        if differ:
            raise UserInputError(
                f"the checkpoint and config.json in {self.path} disagree ({'; '.join(differ)})"
            )
        return config, state

    # -- evaluations -------------------------------------------------------------------------

    def write_evaluation(self, estimate, extra: dict | None = None) -> list[Path]:
        """``evaluation_per_datapoint.csv``, ``khat.png`` and last ``evaluation.json`` (the
        summary of ``estimate``, a ``LogLikelihoodEstimate``, with ``extra``), each written
        atomically: a JSON that is there describes the CSV beside it."""
        from pyro_vae.importance import KHAT_THRESHOLD
        from pyro_vae.plots import save_khat_plot

        count = len(estimate.khat)
        labels = estimate.labels if estimate.labels is not None else np.full(count, -1)
        bound_names = [f"L_{k}" for k in estimate.bounds]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["index", "label", "log_likelihood", "elbo", *bound_names, "khat", "ess"])
        for i in range(count):
            writer.writerow(
                [
                    i,
                    int(labels[i]),
                    f"{estimate.log_likelihood[i]:.6f}",
                    f"{estimate.elbo[i]:.6f}",
                    *[f"{estimate.bounds[k][i]:.6f}" for k in estimate.bounds],
                    f"{estimate.khat[i]:.4f}",
                    f"{estimate.ess[i]:.2f}",
                ]
            )
        summary = {**(extra or {}), **estimate.summary, "warning": estimate.warning}
        summary.setdefault("num_samples", estimate.num_samples)
        kept = self.kept_evaluation(summary)
        kept.parent.mkdir(exist_ok=True)
        write_text_atomically(kept.with_suffix(".csv"), out.getvalue())
        write_text_atomically(kept, _json(summary))
        write_text_atomically(self.per_image_file, out.getvalue())
        save_khat_plot(estimate.khat, KHAT_THRESHOLD, self.khat_file)
        self.write_evaluation_summary(summary)
        return [self.evaluation_file, self.per_image_file, self.khat_file, kept]

    def kept_evaluation(self, summary: dict) -> Path:
        """Where an evaluation is kept for good, named by what it measured:
        ``evaluations/SPLIT-is-K5000-10000images.json``, ``SPLIT-ais-T1000xC16-500images.json``
        or ``simulated-bdmc-T10-100-1000xC16-100images.json`` (each with its CSV); the run
        folder's ``evaluation.json`` (``evaluation-ais.json``, ``evaluation-bdmc.json``) is
        only the latest of its method."""
        method = summary.get("method", "is")
        if method == "is":
            budget = f"K{summary['num_samples']}"
        elif method == "ais":
            budget = f"T{summary['num_steps']}xC{summary['num_chains']}"
        else:
            steps = "-".join(str(row["steps"]) for row in summary["rows"])
            budget = f"T{steps}xC{summary['num_chains']}"
        split = summary.get("split", "test") if method != "bdmc" else "simulated"
        name = f"{split}-{method}-{budget}-{summary['num_images']}images.json"
        return self.path / "evaluations" / name

    def write_evaluation_summary(self, summary: dict) -> None:
        """``evaluation.json`` alone (``pyro-vae evaluate --elbo-only``); JSON has no inf or
        NaN, so such values are written as null."""
        write_text_atomically(self.evaluation_file, _json(summary))

    def _keep(self, summary: dict, table: str, latest: Path) -> list[Path]:
        """The summary and its per-image CSV ``table``, kept under ``evaluations/`` and as
        the latest of their method (``latest`` and its CSV): the CSV first, so a JSON that is
        there always describes the CSV beside it."""
        kept = self.kept_evaluation(summary)
        kept.parent.mkdir(exist_ok=True)
        latest_table = latest.with_name(latest.stem + "_per_datapoint.csv")
        for path, text in ((kept.with_suffix(".csv"), table), (kept, _json(summary)),
                           (latest_table, table), (latest, _json(summary))):  # fmt: skip
            write_text_atomically(path, text)
        return [latest, latest_table, kept]

    def write_ais_evaluation(self, estimate, extra: dict | None = None) -> list[Path]:
        """``evaluation-ais.json`` (the summary of an ``AISEstimate``) and its per-image CSV:
        log p̂(x), its standard error over the chains, the ESS and the acceptance; kept under
        ``evaluations/`` as well (:meth:`kept_evaluation`)."""
        count = len(estimate.log_likelihood)
        labels = estimate.labels if estimate.labels is not None else np.full(count, -1)
        rows = ["index,label,log_likelihood,chain_standard_error,ess,acceptance"]
        rows += [
            f"{i},{int(labels[i])},{estimate.log_likelihood[i]:.6f},"
            f"{estimate.standard_error[i]:.6f},{estimate.ess[i]:.3f},{estimate.acceptance[i]:.4f}"
            for i in range(count)
        ]
        summary = {**(extra or {}), **estimate.summary}
        return self._keep(summary, "\n".join(rows) + "\n", self.path / AIS_NAME)

    def write_bdmc(self, result, extra: dict | None = None) -> list[Path]:
        """``evaluation-bdmc.json``, the sandwich at each number of steps, and per simulated
        image the lower and upper bound at each (and the IS estimate where computed); kept
        under ``evaluations/`` as well."""
        summary = {**(extra or {}), **result.summary}
        columns = [f"{side}_T{steps}" for steps in result.steps for side in ("lower", "upper")]
        values = [result.lower[s] if side == "lower" else result.upper[s]
                  for s in result.steps for side in ("lower", "upper")]  # fmt: skip
        if result.importance is not None:
            columns.append(f"importance_K{result.num_samples}")
            values.append(result.importance)
        rows = [",".join(["index", *columns])]
        rows += [",".join([str(i)] + [f"{v[i]:.6f}" for v in values])
                 for i in range(len(values[0]))]  # fmt: skip
        return self._keep(summary, "\n".join(rows) + "\n", self.path / BDMC_NAME)

    def resume_config(self, asked: TrainConfig | None) -> TrainConfig:
        """The stored config, with the changes ``asked`` may make on resume."""
        if not self.path.is_dir():
            raise UserInputError(f"cannot resume: run folder {self.path} does not exist")
        stored = self.read_config()
        if asked is None:
            return stored
        fixed = differing_fields(stored, asked, ignore=RESUMABLE_CHANGES)
        if fixed:
            raise UserInputError(
                f"cannot resume {self.path} with a different model or training config "
                f"({'; '.join(fixed)}); only {', '.join(RESUMABLE_CHANGES)} may change"
            )
        return asked


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _json(values: dict) -> str:
    return json.dumps(_finite_or_none(values), indent=2, allow_nan=False) + "\n"


def _finite_or_none(value):
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def trained_for(state: dict, batch_size: int) -> str:
    """How far a checkpoint's parameters trained: "epoch 55", or, for one written inside an
    epoch (a stop request, a timed checkpoint), "epoch 55 and 1498 of 3000 steps of epoch 56"
    (its parameters are those after that step, not those that ended epoch 55)."""
    epoch, position = state["epoch"], state.get("position") or {}
    step, order = position.get("step", 0), position.get("order")
    if not step:
        return f"epoch {epoch}"
    steps = f" of {math.ceil(order.numel() / batch_size)}" if order is not None else ""
    return f"epoch {epoch} and {step}{steps} steps of epoch {epoch + 1}"
