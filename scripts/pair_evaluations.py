"""Rows compared image by image from their per-image CSVs, beside the paper's differences.

A row evaluated on a subset of the test images (``--max-images 1000``) cannot be set
against a published NLL on all 10,000: the subset's own mean differs from the test set's
by more than the gaps in question (± 0.7 nats on 1,000 images). The difference between two
rows on the same images can: both estimates move together with the image, so the paired
standard error is a tenth of either row's, and the paper's difference between the same two
models is a number of its own (Tomczak & Welling's VampPrior minus standard prior, two
levels minus one). For every pair of ``NAME=CSV[:PUBLISHED_NLL]`` given, this prints, as a
markdown table, the mean over their shared images of NLL_a − NLL_b ± its standard error,
the share of images where a is lower, and where both carry a published NLL, the published
difference and how far the measured one is from it.

The CSVs are the ``per_image.csv`` that ``pyro-vae evaluate`` writes (the committed copies
in ``scripts/results/evaluations/`` where the run folders are gone).

    python scripts/pair_evaluations.py \\
        D=scripts/results/evaluations/mnist-D-epoch234-first1000.csv:82.38 \\
        E=scripts/results/evaluations/mnist-E-epoch204-first1000.csv:81.24
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

from pyro_vae.compare import paired, read_per_image
from pyro_vae.errors import UserInputError


@dataclass(frozen=True)
class Evaluation:
    name: str
    published_nll: float | None
    log_likelihood: dict[int, float]  # test image index -> log p̂(x)


def parse_evaluation(text: str) -> Evaluation:
    """``NAME=CSV`` or ``NAME=CSV:PUBLISHED_NLL``, the CSV read."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=CSV[:PUBLISHED_NLL]")
    path, published = Path(rest), None
    head, colon, tail = rest.rpartition(":")
    if colon:
        try:
            path, published = Path(head), float(tail)
        except ValueError:
            pass  # a colon inside the path
    try:
        values = read_per_image(path)
    except UserInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not values:
        raise argparse.ArgumentTypeError(f"{path} is not a per-image CSV of pyro-vae evaluate")
    return Evaluation(name, published, values)


def pair_table(evaluations: list[Evaluation]) -> str:
    """The markdown table of every pair, in the order given (module docstring)."""
    lines = [
        "| rows | images | NLL difference ± SE | lower on | published difference | "
        "measured − published |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for a, b in itertools.combinations(evaluations, 2):
        pair = paired(a.log_likelihood, b.log_likelihood)  # log p̂_a - log p̂_b
        if pair is None:
            lines.append(f"| {a.name} − {b.name} | fewer than 2 shared | | | | |")
            continue
        nll_difference, se = 0.0 - pair.mean, pair.standard_error  # no -0.000
        published = gap = ""
        if a.published_nll is not None and b.published_nll is not None:
            expected = a.published_nll - b.published_nll
            published = f"{expected:+.2f}"
            gap = f"{nll_difference - expected:+.2f} ± {se:.2f}"
        lines.append(
            f"| {a.name} − {b.name} | {pair.images:,} | {nll_difference:+.3f} ± {se:.3f} | "
            f"{pair.share_better:.0%} (of {a.name}) | {published} | {gap} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("evaluations", nargs="+", type=parse_evaluation,
                        metavar="NAME=CSV[:PUBLISHED_NLL]")  # fmt: skip
    args = parser.parse_args(argv)
    if len(args.evaluations) < 2:
        parser.error("give at least two evaluations to pair")
    print(pair_table(args.evaluations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
