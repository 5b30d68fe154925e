"""Semi-supervised MNIST with M2 (Kingma et al. 2014): test error against the paper's.

One run folder per labelled-set size under ``--runs-dir`` (keep it outside the checkout),
trained with ``pyro-vae train --model m2 --labels N`` up to ``--max-minutes`` per row in
this invocation; a row cut short keeps its checkpoint and the next invocation continues
it (bit for bit on the CPU). The test error is the one ``pyro-vae train`` records after
every epoch: argmax q(y|x) against the label on all 10,000 test images, from the last
epoch trained (never chosen by its test error). The section of RESULTS.md between its
markers is rewritten from the run folders, with a plot of the test error per epoch; where
none of them is there (a new machine), the section is kept as it was.

    python scripts/semisupervised_mnist.py --labels 100 600 --max-minutes 60 \\
        --runs-dir ~/pyro-vae-runs/m2 --data-dir ../shared/data --no-download
    python scripts/semisupervised_mnist.py --max-minutes 0   # only rewrite the section

Network and optimizer follow Kingma et al. (2014), section 4: 50 latent units, hidden
layers of 500 softplus units, α = 0.1·N, learning rate 3e-4 (Adam here, RMSProp with
momentum there), minibatches of 100 (here: 100 unlabelled images and 100 labelled ones,
or all of them where there are fewer, per step).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiment_runs, beside this file

from experiment_runs import (  # noqa: E402
    BOOKKEEPING,
    EXIT_INTERRUPTED,
    Children,
    add_run_options,
    environment,
    has_section,
    parsed,
    python_command,
    replace_section,
    run_rows,
    section_body,
    shell_line,
    training_seconds,
)

from pyro_vae.config import LABELLED_WEIGHTINGS, differing_fields  # noqa: E402
from pyro_vae.run import read_config, read_history  # noqa: E402

# Kingma et al. 2014, Table 1: test error of M2 alone with N labels on MNIST.
PUBLISHED_ERROR = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}
SOURCE = (
    "Kingma, Rezende, Mohamed & Welling, Semi-Supervised Learning with Deep Generative "
    "Models, NeurIPS 2014, Table 1 (M2)"
)
PAPER_FLAGS = (
    "--model", "m2", "--hidden-dims", "500", "--latent-dim", "50", "--activation",
    "softplus", "--lr", "0.0003", "--batch-size", "100", "--epochs", "1000",
)  # fmt: skip
SECTION = "semisupervised"


def train_command(labels: int, run_dir: Path, args: argparse.Namespace) -> list[str]:
    data = ["--data-dir", str(args.data_dir)] + (["--no-download"] if args.no_download else [])
    cap = ["--epochs", str(args.epochs)] if args.epochs is not None else []
    if (run_dir / "config.json").is_file():
        return python_command("train", "--resume", str(run_dir), *data, *cap, "--quiet")
    weighting = ["--labelled-weighting", args.labelled_weighting] if args.labelled_weighting else []
    beta = ["--beta", str(args.beta)] if args.beta is not None else []
    return python_command(
        "train", *PAPER_FLAGS, *weighting, *beta, "--labels", str(labels),
        "--dataset", args.dataset, "--seed", str(args.seed), *data, *cap,
        "--out", str(run_dir), "--quiet",
    )  # fmt: skip


def run_row(labels: int, args: argparse.Namespace, children: Children) -> str:
    run_dir = args.runs_dir / f"m2-{labels}"
    log = args.runs_dir / f"m2-{labels}.log"
    failed = children.train(train_command(labels, run_dir, args), run_dir, log, args)
    if failed is not None:
        return f"{labels} labels: training failed (exit {failed}); see {log}"
    if not (run_dir / "checkpoint.pt").is_file():
        return f"{labels} labels: not trained yet"
    return f"{labels} labels: epoch {read_history(run_dir)[-1]['epoch']}"


CLASSIFIER_PASSES, CLASSIFIER_CHECK_EVERY = 200, 10


def classifier_alone(labels: int, args: argparse.Namespace) -> float:
    """The test error of M2's classifier network trained on the labelled images alone
    (cross-entropy, Adam 1e-3, no unlabelled image), at the pass, of every
    CLASSIFIER_CHECK_EVERY-th up to CLASSIFIER_PASSES, with the lowest validation error:
    what the unlabelled images add is the difference. Cached in the row's folder."""
    import json

    import torch

    from pyro_vae.config import TrainConfig
    from pyro_vae.data import load_data
    from pyro_vae.registry import build_vae
    from pyro_vae.semisupervised import choose_labelled, label_count, label_error

    cache = args.runs_dir / f"m2-{labels}" / "classifier_alone.json"
    if cache.is_file() and "valid_error" in (cached := json.loads(cache.read_text())):
        return cached["test_error"]
    data = load_data(args.dataset, "dynamic", "cpu", args.data_dir, not args.no_download)
    classes = label_count(data.train_labels, args.dataset)
    chosen = choose_labelled(data.train_labels, labels, classes, args.seed)
    torch.manual_seed(args.seed)
    config = TrainConfig.from_dict({"model": "m2", "labels": labels, "hidden_dims": [500],
                                    "latent_dim": 50})  # fmt: skip
    guide = build_vae(config, data.image_shape, classes)[1]  # label_error reads its q(y|x)
    optimizer = torch.optim.Adam(guide.classifier.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    best = {"valid_error": float("inf")}
    for passes in range(1, CLASSIFIER_PASSES + 1):
        for index in chosen[torch.randperm(len(chosen), generator=generator)].split(100):
            x = data.train_batch(index, generator)
            loss = torch.nn.functional.cross_entropy(guide.classifier(x), data.train_labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if passes % CLASSIFIER_CHECK_EVERY == 0:
            valid = label_error(guide, data, "valid")
            if valid < best["valid_error"]:
                best = {"passes": passes, "valid_error": valid,
                        "test_error": label_error(guide, data, "test")}  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(best) + "\n")
    return best["test_error"]


def save_error_curves(
    histories: dict[int, list[dict]], path: Path, variants: Sequence[Variant] = ()
) -> None:
    """Test error per epoch of each row (solid), each variant (dashed, the colour of the row
    with as many labels) and the paper's (dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def curve(history: list[dict], **style) -> None:
        rows = [row for row in history if row["epoch"] > 0]
        axis.plot([r["epoch"] for r in rows], [100 * r["test_error"] for r in rows], **style)

    figure, axis = plt.subplots(figsize=(7, 4))
    colours = {}
    for labels, history in histories.items():
        curve(history, label=f"{labels} labels")
        colours[labels] = axis.lines[-1].get_color()
        if labels in PUBLISHED_ERROR:
            axis.axhline(PUBLISHED_ERROR[labels], linestyle=":", linewidth=0.8,
                         color=colours[labels])  # fmt: skip
    for variant in variants:
        curve(variant.history, linestyle="--", color=colours.get(variant.labels),
              label=f"{variant.labels} labels, {variant.change}")  # fmt: skip
    axis.set_xlabel("epoch (passes over the unlabelled images)")
    axis.set_ylabel("test error, % (dotted: Kingma et al. 2014)")
    axis.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")  # 30, not 3×10¹
    axis.yaxis.set_major_formatter(plain)
    axis.yaxis.set_minor_formatter(plain)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


@dataclass
class Variant:
    """A run of another configuration (``--variant-runs-dir``), set beside the paper
    configuration's run with as many labels."""

    labels: int
    change: str  # how its config differs from the row's, "beta: 1.0 -> 2.0" say
    history: list[dict]


def find_variants(args: argparse.Namespace, histories: dict[int, list[dict]]) -> list[Variant]:
    """The m2 run folders under ``--variant-runs-dir`` that have trained an epoch and whose
    row (as many labels, its history in ``histories``) has too, with what they change, in
    the order of the rows."""
    if args.variant_runs_dir is None:
        return []
    variants = []
    for config_file in sorted(args.variant_runs_dir.glob("*/config.json")):
        run_dir = config_file.parent
        config = read_config(run_dir)
        if config.model != "m2" or config.labels not in histories:
            continue
        if not (run_dir / "checkpoint.pt").is_file() or len(history := read_history(run_dir)) < 2:
            continue
        row = read_config(args.runs_dir / f"m2-{config.labels}")
        change = "; ".join(differing_fields(row, config, ignore=BOOKKEEPING))
        variants.append(Variant(config.labels, change or "same config", history))
    return sorted(variants, key=lambda variant: (variant.labels, variant.change))


def home_relative(path: Path) -> str:
    """``path`` with the home folder written ``~`` (the tables name no user's folder)."""
    path = Path(path).expanduser().resolve()
    return f"~/{path.relative_to(Path.home())}" if path.is_relative_to(Path.home()) else str(path)


def variant_table(variants: list[Variant], histories: dict[int, list[dict]]) -> list[str]:
    """Each variant's last epoch against the published error, and the variant beside the
    paper configuration's run (``histories``, by labels) at the last epoch both reached:
    the comparison at equal training, whichever of the two trained longer."""
    lines = [
        "| labels | change | epochs | test error | published | difference | compared at epoch "
        "| test error there, this run / the row's | difference | −ELBO (test) there, this run "
        "/ the row's |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant in variants:
        last = variant.history[-1]
        error = 100 * last["test_error"]
        published = PUBLISHED_ERROR.get(variant.labels)
        paper = (
            ("—", "") if published is None else (f"{published:.2f}%", f"{error - published:+.2f}")
        )
        cells = [str(variant.labels), variant.change, str(last["epoch"]), f"{error:.2f}%", *paper]
        row = {r["epoch"]: r for r in histories.get(variant.labels, [])}
        ours = {r["epoch"]: r for r in variant.history}
        shared = sorted(set(row) & set(ours) - {0})
        if shared:
            mine, theirs = ours[shared[-1]], row[shared[-1]]
            cells += [
                str(shared[-1]),
                f"{100 * mine['test_error']:.2f}% / {100 * theirs['test_error']:.2f}%",
                f"{100 * (mine['test_error'] - theirs['test_error']):+.2f}",
                f"{-mine['test_elbo']:.2f} / {-theirs['test_elbo']:.2f}",
            ]
        else:
            cells += ["no epoch in common", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def row_labels(args: argparse.Namespace) -> list[int]:
    """The section's rows: the paper's labelled-set sizes and those asked for, in order."""
    return sorted({*PUBLISHED_ERROR, *args.labels})


def previous_rows(section: str) -> dict[int, tuple[str, str]]:
    """Each measured row's table line and command line in ``section`` (as RESULTS.md last
    gave it), by labels: kept for the rows whose run folder is gone, since the folders
    live outside the checkout and do not outlive a machine."""
    lines, commands = {}, {}
    for line in section.splitlines():
        if measured := re.match(r"\| (\d+) \| \d+ of \d+ \|", line):  # not the variants'
            lines[int(measured[1])] = line
        elif command := re.match(r"- (\d+) labels: ", line):
            commands[int(command[1])] = line
    return {labels: (line, commands.get(labels, "")) for labels, line in lines.items()}


def row_lines(
    labels: int, args: argparse.Namespace, previous: dict[int, tuple[str, str]]
) -> tuple[str, str, list[dict]]:
    """One row's table line, its command line ("" where it has none) and its history ([]
    where its run folder has not trained an epoch: the lines are then ``previous``'s where
    it has them, else "not run yet")."""
    run_dir = args.runs_dir / f"m2-{labels}"
    published = PUBLISHED_ERROR.get(labels)
    shown = "—" if published is None else f"{published:.2f}%"
    history = read_history(run_dir) if (run_dir / "checkpoint.pt").is_file() else []
    if len(history) < 2:
        line, command = previous.get(
            labels, (f"| {labels} | not run yet | | | | | | {shown} | |", "")
        )
        return line, command, []
    last, config = history[-1], read_config(run_dir)
    seconds = training_seconds(history)
    error = 100 * last["test_error"]
    valid = "—" if last.get("valid_error") is None else f"{100 * last['valid_error']:.2f}%"
    difference = "" if published is None else f"{error - published:+.2f}"
    alone = 100 * classifier_alone(labels, args)
    line = (
        f"| {labels} | {last['epoch']} of {config.epochs} | {seconds / 3600:.2f} h | "
        f"{error:.2f}% | {valid} | {alone:.2f}% | {-last['test_elbo']:.2f} | {shown} | "
        f"{difference} |"
    )
    command = shell_line(train_command(labels, Path("RUN"), _fresh(args)))
    return line, f"- {labels} labels: `{command}`; {last['epoch']} epochs, {seconds:.0f} s", history


def section_text(args: argparse.Namespace, previous: dict[int, tuple[str, str]]) -> str:
    """The RESULTS.md section: one table row per labelled-set size, the commands, a plot.
    A row without a run folder keeps its lines from ``previous`` (:func:`previous_rows`)."""
    lines = [
        "## Semi-supervised MNIST: M2 test error",
        "",
        "Written by `python scripts/semisupervised_mnist.py` (issue 14) from its run folders.",
        "Test error of argmax q(y|x) on all 10,000 MNIST test images after the last epoch",
        f'trained (never chosen by test error); published: {SOURCE}. "Classifier alone":',
        "the same classifier network trained on the labelled images only (cross-entropy, the",
        f"pass, of every {CLASSIFIER_CHECK_EVERY}th up to {CLASSIFIER_PASSES}, with the lowest "
        "validation error), which says what the unlabelled images add.",
        "",
        "| labels | epochs | training | test error | validation error | classifier alone | "
        "−ELBO (test, y summed out) | published | difference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    details, histories, carried = [], {}, []
    for labels in row_labels(args):
        line, command, history = row_lines(labels, args, previous)
        lines.append(line)
        details += [command] if command else []
        if history:
            histories[labels] = history
        elif labels in previous:
            carried.append(str(labels))
    env = environment()
    details.append(f"- device: {env['device']}; {env['versions']}; written {env['date']}")
    if carried:
        details.append(
            f"- {', '.join(carried)} labels: as this file last gave them; their run folders "
            f"are not under `{home_relative(args.runs_dir)}` on the machine that wrote it, "
            "and the curves and comparisons below leave them out"
        )
    variants = find_variants(args, histories)
    if variants:
        details += [
            "",
            f"Other configurations (run folders in `{home_relative(args.variant_runs_dir)}`), "
            "each at its last epoch, and beside the row with as many labels at the last epoch "
            "both reached:",
            "",
            *variant_table(variants, histories),
        ]
    figures = []
    if histories:
        plot = args.figures_dir / "m2-test-error.png"
        save_error_curves(histories, plot, variants)
        figures.append(("M2 test error per epoch", plot))
        most = max(histories)  # the pictures of the run with the most labels
        for caption, path in class_pictures(args.runs_dir / f"m2-{most}", args.figures_dir):
            figures.append((f"{most} labels: {caption}", path))
    notes = args.notes.read_text().strip() if args.notes and args.notes.is_file() else ""
    shown = [f"{caption}:\n\n![{caption}]({os.path.relpath(path, args.results.parent)})\n"
             for caption, path in figures]  # fmt: skip
    return "\n".join([*lines, "", *details, "", notes, "", *shown])


def class_pictures(run_dir: Path, figures_dir: Path) -> list[tuple[str, Path]]:
    """The analogies and per-class samples of ``pyro-vae viz``, copied to ``figures_dir``."""
    import shutil
    import tempfile

    from pyro_vae.latent import write_class_images
    from pyro_vae.run import load_run

    run = load_run(run_dir, device="cpu")
    with tempfile.TemporaryDirectory() as scratch:
        written, _ = write_class_images(run, Path(scratch))
        pictures = []
        for caption, path in written.items():
            if path.name in ("analogies.png", "class_samples.png"):
                target = figures_dir / f"m2-{run.config.labels}-{path.name}"
                shutil.copyfile(path, target)
                pictures.append((caption, target))
    return pictures


def _fresh(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments of a first run, for printing the command that started a row."""
    fresh = {"epochs": None, "data_dir": "../shared/data", "no_download": True}
    return argparse.Namespace(**{**vars(args), **fresh})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", nargs="+", type=int, default=list(PUBLISHED_ERROR))
    add_run_options(parser, Path.home() / "pyro-vae-runs" / "m2")
    parser.add_argument(
        "--labelled-weighting",
        choices=LABELLED_WEIGHTINGS,
        default=None,
        help="new rows: pyro-vae train's --labelled-weighting (default: its own, batch)",
    )
    parser.add_argument(
        "--beta",
        type=float,
        default=None,
        help="new rows: pyro-vae train's --beta, the weight of the code's KL (default: 1)",
    )
    parser.add_argument(
        "--variant-runs-dir",
        type=Path,
        default=None,
        help="m2 run folders of other configurations (trained with --runs-dir there, or by "
        "pyro-vae train), tabled and plotted beside the rows",
    )
    parser.add_argument(
        "--notes",
        type=Path,
        default=Path("scripts/results/semisupervised-notes.md"),
        help="hand-written discussion placed under the table",
    )
    args = parsed(parser, argv)
    if args.variant_runs_dir is not None:
        args.variant_runs_dir = args.variant_runs_dir.expanduser()
        if not args.variant_runs_dir.is_dir():
            parser.error(f"--variant-runs-dir {args.variant_runs_dir}: no such folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    work = lambda labels, children: run_row(labels, args, children)  # noqa: E731
    children = run_rows(work, args.labels, args.jobs)
    old = args.results.read_text() if args.results.is_file() else ""
    folders = [args.runs_dir / f"m2-{labels}" for labels in row_labels(args)]
    if has_section(old, SECTION) and not any((f / "checkpoint.pt").is_file() for f in folders):
        # Run folders do not outlive a machine; a new one must not erase measured rows.
        print(f"no M2 run folder under {args.runs_dir}: {args.results} kept as it was")
    else:
        section = section_text(args, previous_rows(section_body(old, SECTION)))
        args.results.write_text(replace_section(old, SECTION, section))
        print(f"wrote {args.results}")
    return EXIT_INTERRUPTED if children.stopping.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
