"""Several run folders side by side: ``pyro-vae compare RUN_DIR...``.

One row per run: the config fields in which the runs differ (the fields they share are
left out, so the table shows what was varied), the epochs trained, the best validation
ELBO, the last test ELBO and, where ``pyro-vae evaluate`` wrote ``evaluation.json``, the
importance-sampled log p̂(x) ± its standard error and the share of images with k̂ > 0.7.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserInputError
from pyro_vae.run import read_history, read_run_config


def _shown(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def run_row(run_dir: Path, config: TrainConfig, differing: list[str]) -> dict[str, str]:
    """The table row of one run: its differing config fields, then epochs, best validation
    ELBO, last test ELBO, log p̂(x) ± SE and the share of k̂ > 0.7 (where evaluated)."""
    history = read_history(run_dir)
    valid = [row["valid_elbo"] for row in history if row.get("valid_elbo") is not None]
    tested = [row["test_elbo"] for row in history if row.get("test_elbo") is not None]
    row = {"run": str(run_dir)}
    row.update({name: _shown(getattr(config, name)) for name in differing})
    row["epochs_trained"] = str(history[-1]["epoch"]) if history else "0"
    row["best_valid_elbo"] = _shown(max(valid) if valid else None)
    row["test_elbo"] = _shown(tested[-1] if tested else None)
    row["log_likelihood"] = row["khat_above_0.7"] = ""
    evaluation = run_dir / "evaluation.json"
    if evaluation.is_file():
        summary = json.loads(evaluation.read_text())
        error = summary.get("standard_error")
        row["log_likelihood"] = f"{summary['log_likelihood']:.3f}" + (
            f" ± {error:.3f}" if error is not None else ""
        )
        row["khat_above_0.7"] = f"{summary['share_khat_above_0.7']:.1%}"
    return row


def compare_runs(run_dirs: list[Path]) -> list[dict[str, str]]:
    """One row per run folder; the columns are the differing fields, then the measures."""
    if not run_dirs:
        raise UserInputError("compare needs at least one run folder")
    configs = [read_run_config(Path(run_dir)) for run_dir in run_dirs]
    values = [config.to_dict() for config in configs]
    differing = [name for name in values[0] if any(v[name] != values[0][name] for v in values)]
    return [run_row(Path(d), c, differing) for d, c in zip(run_dirs, configs)]


def markdown_table(rows: list[dict[str, str]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
