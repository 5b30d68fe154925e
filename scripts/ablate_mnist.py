"""Which of row Ab's choices carry its lead over row A's run: an ablation at equal epochs.

Row Ab of ``reproduce_mnist.py`` is row A (Burda et al.'s network, schedule and Adam
ε = 1e-4) plus four more choices of their code: Glorot-uniform weights, the decoder's output
bias at the data's logit, σ = exp(a) in the guide, and Adam's β1 = 0.99. Row A's run in
RESULTS.md differs from Ab in a fifth: it began before the row asked for ε = 1e-4, with
torch's 1e-8. Each variant here is row A's command with one group of these choices changed,
trained for the same ``--epochs`` (default 364, the end of the schedule's stage i = 5, so
every variant ends at the same learning rate) from the same seed, then scored like the rows
(K = 5000 importance samples, on the first ``--max-images`` test images to keep it cheap).
A variant's NLL is compared with that of variant A (row A's command, trained here) image by
image (``pyro_vae.compare.paired_difference``); its test ELBO, averaged over the last ``--window``
epochs, with that of the full row Ab run (``--reference-run``) over the same epochs: Ab's
run has gone past them, so it has no NLL at this epoch.

    python scripts/ablate_mnist.py --max-minutes 120 --jobs 1 --threads 1 \\
        --runs-dir ~/pyro-vae-runs/ablation --data-dir ../shared/data

The section it writes in RESULTS.md is its own (marked); ``reproduce_mnist.py`` keeps it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiment_runs, reproduce_mnist

from experiment_runs import (  # noqa: E402
    EXIT_INTERRUPTED,
    add_run_options,
    config_changes,
    environment,
    has_section,
    parsed,
    replace_section,
    run_rows,
    shell_line,
    training_seconds,
)
from reproduce_mnist import (  # noqa: E402
    BURDA_BETA1,
    BURDA_INIT,
    ROWS,
    Row,
    _fresh,
    read_record,
    run_row,
    train_command,
)

from pyro_vae.compare import paired_difference  # noqa: E402
from pyro_vae.plots import save_overlaid_curves  # noqa: E402
from pyro_vae.run import read_history  # noqa: E402

SECTION = "ablation of row Ab"
A = ROWS["A"]
VARIANTS = {
    variant.key: variant
    for variant in (
        A,
        Row("A-eps", "row A with torch's Adam ε 1e-8 (as row A's run)",
            (*A.flags, "--adam-eps", "1e-08"), None, "", "", against="A"),
        Row("A-beta1", "row A with Adam β1 0.99", (*A.flags, *BURDA_BETA1),
            None, "", "", against="A"),
        Row("A-init", "row A with Glorot weights, output bias at the data's logit, σ = exp(a)",
            (*A.flags, *BURDA_INIT), None, "", "", against="A"),
    )
}  # fmt: skip


def mean_test_elbo(history: list[dict], last_epoch: int, window: int) -> tuple[float, float] | None:
    """Mean and standard deviation of the test ELBO over epochs last_epoch - window + 1 ..
    last_epoch (one epoch's value moves by a few tenths with the last steps' noise)."""
    values = [r["test_elbo"] for r in history if last_epoch - window < r["epoch"] <= last_epoch]
    if len(values) < window or None in values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if window > 1 else 0.0


def variant_line(key: str, configuration: str, history: list[dict], args, baseline) -> str:
    elbo = mean_test_elbo(history, args.epochs, args.window)
    if elbo is None:
        return f"| {key} | {configuration} | {history[-1]['epoch']} (not yet {args.epochs}) |||||"
    gain = "" if baseline is None or key == A.key else f"{elbo[0] - baseline[0]:+.2f}"
    nll = paired = ""
    record = read_record(args.runs_dir / key)
    if record is not None and key in VARIANTS:
        summary = record["evaluation"]
        nll = f"{-summary['log_likelihood']:.2f} ± {summary['standard_error']:.2f}"
        difference = paired_difference(args.runs_dir / key, args.runs_dir / A.key)
        if difference is not None and key != A.key:
            paired = f"{-difference.mean:+.2f} ± {difference.standard_error:.2f}"
    return (
        f"| {key} | {configuration} | {args.epochs} | {elbo[0]:.2f} (sd {elbo[1]:.2f}) | "
        f"{gain} | {nll} | {paired} |"
    )


def section_text(args: argparse.Namespace) -> str:
    histories = {key: read_history(args.runs_dir / key) for key in VARIANTS
                 if (args.runs_dir / key / "metrics.jsonl").is_file()}  # fmt: skip
    baseline = mean_test_elbo(histories.get(A.key, []), args.epochs, args.window)
    lines = [
        "## Ablation: which of row Ab's choices carry its lead over row A",
        "",
        f"Written by `python scripts/ablate_mnist.py` (its docstring says how). Each variant "
        f"is row A's command trained for {args.epochs} epochs from seed {args.seed}; test "
        f"ELBO: mean over epochs {args.epochs - args.window + 1}–{args.epochs} (sd: from "
        f"epoch to epoch); NLL: K = {args.num_samples} on the first {args.max_images:,} test "
        "images, and minus row A's image by image (lower is better).",
        "",
        "| variant | configuration | epochs | test ELBO | vs A | NLL ± SE | NLL vs A, paired |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, history in histories.items():
        lines.append(variant_line(key, VARIANTS[key].configuration, history, args, baseline))
    seconds = {key: training_seconds(history) for key, history in histories.items()}
    reference = args.reference_run.expanduser()
    if (reference / "metrics.jsonl").is_file():
        history = read_history(reference)
        histories["Ab (row Ab's run)"] = history
        lines.append(variant_line("Ab", ROWS["Ab"].configuration, history, args, baseline))
    where = environment()
    lines += ["", "Training: " + ", ".join(f"{key} {t:.0f} s" for key, t in seconds.items())
              + f"; {where['device']}; {where['versions']}; "
              f"written {where['date']}."]  # fmt: skip
    lines += ["", "Commands (then `pyro-vae evaluate RUN --num-samples "
              f"{args.num_samples} --max-images {args.max_images}`):", ""]  # fmt: skip
    capped = argparse.Namespace(**{**vars(_fresh(args)), "epochs": args.epochs})
    commands = [(key, train_command(variant, Path("RUN"), capped), args.runs_dir / key)
                for key, variant in VARIANTS.items()]  # fmt: skip
    # Row Ab's run is the full row's, started by reproduce_mnist.py without the cap.
    commands.append(("Ab", train_command(ROWS["Ab"], Path("RUN"), _fresh(args)), reference))
    for key, command, run_dir in commands:
        lines.append(f"- {key}: `{shell_line(command)}`")
        if (run_dir / "config.json").is_file():
            changes = config_changes(command, run_dir)
            if changes:
                changed = "; ".join(changes)
                lines.append(f"  - its run has another config (command -> run): {changed}")
    figure = args.figures_dir / "mnist-ablation.png"
    first = max(1, args.epochs // 10)  # the first epochs' ELBO (some -150) would flatten the rest
    shown = {key: [r for r in history if first <= r["epoch"] <= args.epochs]
             for key, history in histories.items()}  # fmt: skip
    figure.parent.mkdir(parents=True, exist_ok=True)
    save_overlaid_curves(shown, figure)
    shown_path = os.path.relpath(figure, args.results.parent)
    return "\n".join([*lines, "", f"![test ELBO per epoch of each variant]({shown_path})", ""])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    add_run_options(parser, Path.home() / "pyro-vae-runs" / "ablation")
    parser.set_defaults(epochs=364, jobs=1)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--max-images", type=int, default=2000)
    parser.add_argument("--window", type=int, default=10, help="epochs the test ELBO averages")
    parser.add_argument(
        "--reference-run",
        type=Path,
        default=Path.home() / "pyro-vae-runs" / "mnist" / "Ab",
        help="row Ab's run folder (reproduce_mnist.py), whose test ELBO the table shows",
    )
    return parsed(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    work = lambda variant, children: run_row(variant, args, children)  # noqa: E731
    children = run_rows(work, [VARIANTS[key] for key in args.variants], args.jobs)
    old = args.results.read_text() if args.results.is_file() else ""
    if has_section(old, SECTION) and not (args.runs_dir / A.key / "checkpoint.pt").is_file():
        print(f"no run of row A under {args.runs_dir}: {args.results} kept as it was")
    else:
        args.results.write_text(replace_section(old, SECTION, section_text(args)))
        print(f"wrote {args.results}")
    return EXIT_INTERRUPTED if children.stopping.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
