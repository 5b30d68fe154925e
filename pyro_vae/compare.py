"""Several run folders side by side: ``pyro-vae compare RUN_DIR...``.

One row per run: the config fields in which the runs differ (the fields they share are
left out, so the table shows what was varied), the epochs trained, the best validation
ELBO, the last test ELBO and, where ``pyro-vae evaluate`` wrote ``evaluation.json``, the
importance-sampled log p̂(x) ± its standard error and the share of images with k̂ > 0.7.

Where two runs were evaluated on the same test images, their difference is paired
(:func:`paired_difference`): the mean over images of log p̂_a(x) − log p̂_b(x), whose standard
error is that of the per-image differences. Both estimates vary mostly with the image (some
digits are far cheaper to code than others), which the pairing cancels, so this standard
error is often ten times smaller than either run's own: it says whether one run beats the
other on these images, where the runs' own ± only say how well each mean is known.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserInputError
from pyro_vae.run import read_history, read_run_config
from pyro_vae.run_folder import RunFolder


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
    summary = RunFolder(run_dir).read_evaluation()
    if summary is not None and "log_likelihood" in summary:  # not an --elbo-only one
        error = summary.get("standard_error")
        row["log_likelihood"] = f"{summary['log_likelihood']:.3f}" + (
            f" ± {error:.3f}" if error is not None else ""
        )
        row["khat_above_0.7"] = f"{summary['share_khat_above_0.7']:.1%}"
    return row


@dataclass(frozen=True)
class PairedDifference:
    """log p̂_a(x) − log p̂_b(x) averaged over the ``images`` both runs evaluated."""

    mean: float
    standard_error: float
    images: int
    share_better: float  # of those images, the share where run a's estimate is higher


def read_per_image(path: Path) -> dict[int, float]:
    """Test image index -> log p̂(x) from a per-image CSV of ``pyro-vae evaluate`` (empty if
    there is no such file)."""
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("index", "log_likelihood") if c not in (reader.fieldnames or [])]
        if missing:
            raise UserInputError(
                f"{path} is not a per-image CSV of pyro-vae evaluate: it has no column "
                f"{missing[0]!r}"
            )
        return {int(row["index"]): float(row["log_likelihood"]) for row in reader}


def per_image_log_likelihood(run_dir: Path) -> dict[int, float]:
    """Test image index -> log p̂(x) from the run's last ``pyro-vae evaluate`` (empty if none)."""
    return read_per_image(RunFolder(run_dir).per_image_file)


def paired_difference(run_a: Path, run_b: Path) -> PairedDifference | None:
    """Run a's log p̂(x) minus run b's over the test images both evaluated (module
    docstring), or None where they share fewer than two."""
    return paired(per_image_log_likelihood(run_a), per_image_log_likelihood(run_b))


def paired(a: dict[int, float], b: dict[int, float]) -> PairedDifference | None:
    """Mean of ``a[i] - b[i]`` over the images i both hold, with its standard error, or None
    where they share fewer than two."""
    shared = sorted(a.keys() & b.keys())
    if len(shared) < 2:
        return None
    differences = [a[i] - b[i] for i in shared]
    mean = math.fsum(differences) / len(shared)
    variance = math.fsum((d - mean) ** 2 for d in differences) / (len(shared) - 1)
    better = sum(d > 0 for d in differences) / len(shared)
    return PairedDifference(mean, math.sqrt(variance / len(shared)), len(shared), better)


def pairing_refusal(run_a: Path, run_b: Path) -> str | None:
    """Why two runs' evaluations cannot be paired image by image, or None: another split,
    other images (their digests differ), or a per-image file cut short."""
    a, b = RunFolder(run_a).read_evaluation(), RunFolder(run_b).read_evaluation()
    if a is None or b is None:
        return None
    if a.get("split") != b.get("split"):
        return f"not paired: {a.get('split')} split against {b.get('split')}"
    if a.get("split_sha256") != b.get("split_sha256"):
        return "not paired: other images (the splits' digests differ)"
    for run, summary in ((run_a, a), (run_b, b)):
        rows = len(per_image_log_likelihood(run))
        if rows and summary.get("num_images") not in (None, rows):
            return (
                f"not paired: {run}'s per-image file holds {rows} of {summary['num_images']} "
                "images (a write cut off?); evaluate it again"
            )
    return None


def compare_runs(run_dirs: list[Path]) -> list[dict[str, str]]:
    """One row per run folder; the columns are the differing fields, then the measures, and
    (where some run after the first was evaluated on the first run's images) each run's
    log p̂(x) minus the first's, paired."""
    if not run_dirs:
        raise UserInputError("compare needs at least one run folder")
    configs = [read_run_config(Path(run_dir)) for run_dir in run_dirs]
    values = [config.to_dict() for config in configs]
    differing = [name for name in values[0] if any(v[name] != values[0][name] for v in values)]
    rows = [run_row(Path(d), c, differing) for d, c in zip(run_dirs, configs)]
    first = Path(run_dirs[0])
    refusals = [pairing_refusal(Path(d), first) for d in run_dirs[1:]]
    paired = [
        None if refusal else paired_difference(Path(d), first)
        for d, refusal in zip(run_dirs[1:], refusals)
    ]
    if any(p is not None for p in paired) or any(refusals):
        rows[0]["vs_first_paired"] = ""
        for row, p, refusal in zip(rows[1:], paired, refusals):
            shown = (
                "" if p is None else f"{p.mean:+.3f} ± {p.standard_error:.3f} ({p.images} images)"
            )
            row["vs_first_paired"] = refusal or shown
    for row, run_dir in zip(rows, run_dirs):  # which estimate each log p̂(x) is
        summary = RunFolder(Path(run_dir)).read_evaluation() or {}
        if "log_likelihood" in summary:
            k = summary.get("num_samples")
            row["estimate"] = f"IS K={k}" if k else "IS"
            row["images"] = str(summary.get("num_images", ""))
        else:
            row["estimate"] = row["images"] = ""
    annealed = [RunFolder(Path(run_dir)).read_evaluation("ais") for run_dir in run_dirs]
    if any(annealed):  # AIS beside IS, never in its place (pyro-vae evaluate --method ais)
        for row, summary in zip(rows, annealed):
            summary = summary or {}
            error = summary.get("standard_error")
            row["ais_log_likelihood"] = (
                f"{summary['log_likelihood']:.3f}" + (f" ± {error:.3f}" if error else "")
                if "log_likelihood" in summary else ""
            )  # fmt: skip
            row["ais_estimate"] = (
                f"AIS T={summary['num_steps']}×C={summary['num_chains']}" if summary else ""
            )
            row["ais_images"] = str(summary.get("num_images", ""))
    return rows


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
