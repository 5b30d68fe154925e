"""IS against AIS on trained MNIST runs: how far the guide's importance-sampled log p̂(x) is
from annealed importance sampling, image by image, and BDMC's sandwich on simulated images.

For each ``--run ROW=RUN_DIR``:

1. IS with K = ``--num-samples`` on the first ``--images`` test images (the run's kept
   evaluation ``evaluations/test-is-K5000-Nimages`` where it covers them, else evaluated);
2. AIS from the guide on the first ``--sweep-images`` of them at each ``--sweep-steps``
   (log p̂ against steps: where it stops moving);
3. AIS at ``--steps`` on all ``--images``: the mean per-image difference AIS − IS ± its
   standard error, and the share of images where the two differ by more than 1 nat, split
   by the IS estimate's k̂ (≤ 0.7 / > 0.7);
4. for ``--bdmc-row``, BDMC on ``--bdmc-images`` images simulated from the model at
   ``--bdmc-steps``, with IS (same K) on the same images.

Every estimate is ``pyro-vae evaluate`` run in this process; each is kept in the run
folder under ``evaluations/`` (named by method, budget and images), so a rerun reuses what
is there and a stopped run continues. The per-image CSVs, a figure and the markdown section
for RESULTS.md are written to ``--out``.

    python scripts/ais_against_is.py --run A=~/pyro-vae-runs/mnist/A \\
        --run D=~/pyro-vae-runs/mnist/D --bdmc-row A --out scripts/results/ais
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from experiment_runs import replace_section

from pyro_vae.cli import main as pyro_vae
from pyro_vae.importance import KHAT_THRESHOLD
from pyro_vae.run import read_history
from pyro_vae.run_folder import RunFolder

MEANINGFUL_NATS = 1.0  # a per-image disagreement worth counting
SECTION = "IS against AIS"  # its marked section of RESULTS.md


def kept(run_dir: Path, summary: dict) -> Path:
    return RunFolder(run_dir).kept_evaluation(summary)


def read_rows(path: Path, images: int | None = None) -> list[dict[str, float]]:
    with path.open(newline="") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return rows[:images] if images is not None else rows


def importance_rows(run_dir: Path, args: argparse.Namespace) -> tuple[Path, list[dict]]:
    """The IS evaluation covering the first ``args.images`` test images: a kept one of
    this K on at least that many images, else a new one."""
    found = sorted(
        (run_dir / "evaluations").glob(f"test-is-K{args.num_samples}-*images.csv"),
        key=lambda p: int(p.stem.split("-")[-1].removesuffix("images")),
    )
    for path in found:
        if int(path.stem.split("-")[-1].removesuffix("images")) >= args.images:
            return path, read_rows(path, args.images)
    evaluate(run_dir, args, "--num-samples", str(args.num_samples), images=args.images)
    path = kept(
        run_dir, {"method": "is", "num_samples": args.num_samples, "num_images": args.images}
    ).with_suffix(".csv")
    return path, read_rows(path)


def evaluate(run_dir: Path, args: argparse.Namespace, *flags: str, images: int) -> None:
    code = pyro_vae(["evaluate", str(run_dir), *flags, "--max-images", str(images), "--quiet"])
    if code != 0:
        raise SystemExit(f"pyro-vae evaluate {run_dir} {' '.join(flags)} failed (exit {code})")


def kept_ais(run_dir: Path, args: argparse.Namespace, steps: int, images: int) -> Path:
    """Where the run keeps an AIS evaluation of ``steps`` x ``args.chains`` on ``images``."""
    return kept(run_dir, {"method": "ais", "num_steps": steps, "num_chains": args.chains,
                          "num_images": images})  # fmt: skip


def ais_rows(run_dir: Path, args: argparse.Namespace, steps: int, images: int) -> tuple:
    path = kept_ais(run_dir, args, steps, images)
    if not path.is_file():
        evaluate(
            run_dir,
            args,
            "--method",
            "ais",
            "--steps",
            str(steps),
            "--chains",
            str(args.chains),
            "--leapfrog-steps",
            str(args.leapfrog_steps),
            images=images,
        )
    return path, json.loads(path.read_text()), read_rows(path.with_suffix(".csv"))


def mean_and_error(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def compare_row(key: str, run_dir: Path, args: argparse.Namespace, out: Path) -> dict:
    """Steps 1-3 of the module docstring for one run; its CSVs copied to ``out``."""
    is_path, importance = importance_rows(run_dir, args)
    is_ll = np.array([r["log_likelihood"] for r in importance])
    khat = np.array([r["khat"] for r in importance])
    sweep = []
    for steps in args.sweep_steps:
        if args.only_kept and not kept_ais(run_dir, args, steps, args.sweep_images).is_file():
            continue  # a row swept over other steps
        path, summary, rows = ais_rows(run_dir, args, steps, args.sweep_images)
        ais = np.array([r["log_likelihood"] for r in rows])
        sweep.append(
            {
                "steps": steps,
                "ais": float(ais.mean()),
                "ais_minus_is": mean_and_error(ais - is_ll[: len(ais)]),
                "acceptance": summary["acceptance_mean"],
                "ess": summary["ess_mean"],
                "chain_se": summary["chain_standard_error_mean"],
                "seconds": summary["seconds"],
            }
        )
        shutil.copy(path.with_suffix(".csv"), out / f"{key}-{path.with_suffix('.csv').name}")
    path, summary, rows = ais_rows(run_dir, args, args.steps, args.images)
    shutil.copy(path.with_suffix(".csv"), out / f"{key}-{path.with_suffix('.csv').name}")
    shutil.copy(is_path, out / f"{key}-{is_path.name}")
    ais = np.array([r["log_likelihood"] for r in rows])
    difference = ais - is_ll
    split = {}
    for name, mask in (
        ("khat <= 0.7", khat <= KHAT_THRESHOLD),
        ("khat > 0.7", khat > KHAT_THRESHOLD),
    ):
        part = difference[mask]
        split[name] = {
            "images": int(mask.sum()),
            "mean": float(part.mean()) if mask.any() else None,
            "share_over_1_nat": float((np.abs(part) > MEANINGFUL_NATS).mean())
            if mask.any()
            else None,
        }
    config = json.loads((run_dir / "config.json").read_text())
    epochs = read_history(run_dir)[-1]["epoch"]
    return {
        "row": key,
        "run": str(run_dir),
        "epochs": epochs,
        "model": config.get("model"),
        "prior": config.get("prior"),
        "images": len(ais),
        "is": mean_and_error(is_ll),
        "ais": mean_and_error(ais),
        "ais_minus_is": mean_and_error(difference),
        "share_over_1_nat": float((np.abs(difference) > MEANINGFUL_NATS).mean()),
        "share_khat_above": float((khat > KHAT_THRESHOLD).mean()),
        "split": split,
        "sweep": sweep,
        "acceptance": summary["acceptance_mean"],
        "ess": summary["ess_mean"],
        "seconds": summary["seconds"],
    }


def bdmc_row(key: str, run_dir: Path, args: argparse.Namespace, out: Path) -> dict:
    steps = "-".join(map(str, args.bdmc_steps))
    summary = {
        "method": "bdmc",
        "num_chains": args.chains,
        "num_images": args.bdmc_images,
        "rows": [{"steps": s} for s in args.bdmc_steps],
    }
    path = kept(run_dir, summary)
    if not path.is_file():
        code = pyro_vae(
            [
                "evaluate",
                str(run_dir),
                "--method",
                "bdmc",
                "--steps",
                *map(str, args.bdmc_steps),
                "--chains",
                str(args.chains),
                "--leapfrog-steps",
                str(args.leapfrog_steps),
                "--bdmc-images",
                str(args.bdmc_images),
                "--num-samples",
                str(args.num_samples),
                "--quiet",
            ]
        )
        if code != 0:
            raise SystemExit(f"pyro-vae evaluate {run_dir} --method bdmc failed (exit {code})")
    shutil.copy(path.with_suffix(".csv"), out / f"{key}-{path.with_suffix('.csv').name}")
    rows = read_rows(path.with_suffix(".csv"))
    importance = np.array([r[f"importance_K{args.num_samples}"] for r in rows])
    table = []
    for s in args.bdmc_steps:
        lower = np.array([r[f"lower_T{s}"] for r in rows])
        upper = np.array([r[f"upper_T{s}"] for r in rows])
        table.append(
            {
                "steps": s,
                "lower": float(lower.mean()),
                "upper": float(upper.mean()),
                "gap": mean_and_error(upper - lower),
                "is_minus_lower": mean_and_error(importance - lower),
                "share_is_inside": float(((importance >= lower) & (importance <= upper)).mean()),
                "share_is_below": float((importance < lower).mean()),
            }
        )
    return {
        "row": key,
        "steps": steps,
        "images": len(rows),
        "table": table,
        "importance": float(importance.mean()),
        "seconds": json.loads(path.read_text())["seconds"],
    }


def save_figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.6), squeeze=False)
    for axis, row in zip(axes[0], rows):
        steps = [s["steps"] for s in row["sweep"]]
        means = [s["ais_minus_is"][0] for s in row["sweep"]]
        errors = [s["ais_minus_is"][1] for s in row["sweep"]]
        axis.errorbar(steps, means, yerr=errors, marker="o", capsize=3, label="AIS − IS")
        axis.axhline(0, color="grey", lw=0.8, label=f"IS, K = {row['num_samples']}")
        axis.set_xscale("log")
        axis.set_xlabel("annealing steps")
        axis.set_ylabel("mean log p̂(x) − IS's (nats)")
        axis.set_title(f"row {row['row']}: {row['sweep_images']} test images")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def section(rows: list[dict], bdmc: dict | None, args: argparse.Namespace) -> str:
    pm = "±"
    lines = [
        "## IS against AIS",
        "",
        f"`python scripts/ais_against_is.py {' '.join(args.command_line)}`, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, CPU, torch threads "
        f"{torch.get_num_threads()}. AIS from the guide, sigmoid schedule, {args.chains} chains "
        f"per image, HMC with {args.leapfrog_steps} leapfrog steps per transition and step sizes "
        f"from a 4-chain pilot; IS with K = {args.num_samples}. Differences are AIS − IS per "
        "image (positive: IS was low), ± the standard error over images.",
        "",
        "log p̂(x) against the number of annealing steps, on the first "
        f"{args.sweep_images} test images:",
        "",
        "| row | steps | AIS − IS | mean acceptance | mean ESS | chains' SE | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        for s in row["sweep"]:
            d, e = s["ais_minus_is"]
            lines.append(
                f"| {row['row']} | {s['steps']} | {d:+.3f} {pm} {e:.3f} | "
                f"{s['acceptance']:.2f} | {s['ess']:.1f} of {args.chains} | "
                f"{s['chain_se']:.3f} | {s['seconds']:.0f} |"
            )
    lines += [
        "",
        f"At {args.steps} steps on the first {args.images} test images:",
        "",
        "| row | epochs | IS log p̂ | AIS log p̂ | AIS − IS | over 1 nat apart | "
        "k̂ ≤ 0.7: images, mean diff., > 1 nat | k̂ > 0.7: images, mean diff., > 1 nat |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = []
        for name in ("khat <= 0.7", "khat > 0.7"):
            part = row["split"][name]
            cells.append(
                "0 images"
                if not part["images"]
                else f"{part['images']}, {part['mean']:+.3f}, {part['share_over_1_nat']:.1%}"
            )
        lines.append(
            f"| {row['row']} | {row['epochs']} | {row['is'][0]:.3f} {pm} {row['is'][1]:.3f} | "
            f"{row['ais'][0]:.3f} {pm} {row['ais'][1]:.3f} | {row['ais_minus_is'][0]:+.3f} "
            f"{pm} {row['ais_minus_is'][1]:.3f} | {row['share_over_1_nat']:.1%} | "
            + " | ".join(cells)
            + " |"
        )
    if bdmc is not None:
        lines += [
            "",
            f"BDMC on {bdmc['images']} images simulated from row {bdmc['row']}'s model "
            "(forward AIS: a stochastic lower bound; reverse AIS from the latent value that "
            f"made each image: an upper bound), with IS (K = {args.num_samples}) on the same "
            "images:",
            "",
            "| steps | lower | upper | gap | IS − lower | IS inside | IS below lower |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for t in bdmc["table"]:
            lines.append(
                f"| {t['steps']} | {t['lower']:.3f} | {t['upper']:.3f} | "
                f"{t['gap'][0]:.3f} {pm} {t['gap'][1]:.3f} | {t['is_minus_lower'][0]:+.3f}"
                f" {pm} {t['is_minus_lower'][1]:.3f} | {t['share_is_inside']:.0%} | "
                f"{t['share_is_below']:.0%} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="ROW=RUN_DIR")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--sweep-images", type=int, default=100)
    parser.add_argument("--sweep-steps", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--leapfrog-steps", type=int, default=5)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--bdmc-row")
    parser.add_argument("--bdmc-images", type=int, default=100)
    parser.add_argument("--bdmc-steps", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--discussion", type=Path, default=None, help="hand-written text placed under the tables"
    )
    parser.add_argument(
        "--only-kept",
        action="store_true",
        help="show only the sweep steps each run has kept (rows swept over other steps)",
    )
    parser.add_argument("--out", type=Path, default=Path("scripts/results/ais"))
    parser.add_argument(
        "--results", type=Path, default=None, help="RESULTS.md: its section is rewritten"
    )
    import sys

    args = parser.parse_args()
    args.command_line = [a for a in sys.argv[1:]]
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = dict(item.split("=", 1) for item in args.run)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for key, run_dir in runs.items():
        row = compare_row(key, Path(run_dir).expanduser(), args, args.out)
        row.update(num_samples=args.num_samples, sweep_images=args.sweep_images)
        rows.append(row)
        print(json.dumps(row))
    bdmc = None
    if args.bdmc_row:
        bdmc = bdmc_row(args.bdmc_row, Path(runs[args.bdmc_row]).expanduser(), args, args.out)
        print(json.dumps(bdmc))
    save_figure(rows, args.out / "ais-against-is.png")
    text = section(rows, bdmc, args)
    if args.discussion is not None and args.discussion.is_file():
        text += "\n" + args.discussion.read_text().strip() + "\n"
    (args.out / "section.md").write_text(text)
    if args.results is not None:
        old = args.results.read_text() if args.results.is_file() else ""
        args.results.write_text(replace_section(old, SECTION, text))
    (args.out / "summary.json").write_text(json.dumps({"rows": rows, "bdmc": bdmc}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
