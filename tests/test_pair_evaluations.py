"""scripts/pair_evaluations.py: rows paired image by image from their per-image CSVs."""

from __future__ import annotations

import csv

import pytest

from pyro_vae.cli import main
from pyro_vae.run_folder import RunFolder
from tests.conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("pair_evaluations")


def shifted_copy(source, target, shift, images):
    """The per-image CSV of ``source`` for its first ``images`` images, log p̂(x) + shift[i]."""
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))[:images]
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "log_likelihood": float(row["log_likelihood"]) + shift[i]})


def test_pairs_are_differences_on_the_shared_images_beside_the_papers(script, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(run), "--quiet"]) == 0
    assert main(["evaluate", str(run), "--num-samples", "10", "--quiet"]) == 0
    full = RunFolder(run).per_image_file
    # b scores 0.5 or 1.5 nats higher on alternate images of the first 20: NLL_a - NLL_b = +1.
    shifts = [0.5 if i % 2 else 1.5 for i in range(20)]
    shifted_copy(full, tmp_path / "b.csv", shifts, 20)
    capsys.readouterr()
    assert script.main([f"a={full}:85.0", f"b={tmp_path / 'b.csv'}:84.2", f"c={full}"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| rows | images | NLL difference ± SE |")
    # mean +1, per-image spread ±0.5: SE = sd / sqrt(20), sd = 0.5 * sqrt(20 / 19)
    se = 0.5 * (20 / 19) ** 0.5 / 20**0.5
    assert table[2] == f"| a − b | 20 | +1.000 ± {se:.3f} | 0% (of a) | +0.80 | +0.20 ± {se:.2f} |"
    assert table[3].startswith("| a − c | 360 | +0.000 ± 0.000 | 0% (of a) |  |  |")
    assert table[4].startswith("| b − c | 20 | -1.000 ± ")


def test_an_argument_that_is_not_a_per_image_csv_is_refused(script, tmp_path, capsys):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    (tmp_path / "good.csv").write_text("index,log_likelihood\n0,-80.5\n1,-90.25\n")
    refusals = (
        ("nameless.csv", "is not NAME=CSV"),
        (f"x={tmp_path / 'missing.csv'}", "is not a per-image CSV"),
        (f"x={tmp_path / 'other.csv'}:80", "has no column 'index'"),
    )
    for argument, message in refusals:
        with pytest.raises(SystemExit) as raised:
            script.main([f"y={tmp_path / 'good.csv'}", argument])
        assert raised.value.code == 2 and message in capsys.readouterr().err
