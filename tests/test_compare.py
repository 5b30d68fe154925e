"""pyro-vae compare: run folders side by side."""

import csv
import io
import json

import pytest

from pyro_vae.cli import main
from pyro_vae.compare import paired_difference, per_image_log_likelihood
from tests.test_cli import SMALL, run_cli


def test_compare_shows_what_differs_and_what_was_measured(tmp_path, capsys):
    runs = [tmp_path / "z4", tmp_path / "z6"]
    for run, latent in zip(runs, ("4", "6")):
        assert run_cli(["train", *SMALL, "--latent-dim", latent, "--out", run], capsys)[0] == 0
    assert run_cli(["evaluate", runs[1], "--num-samples", "50", "--quiet"], capsys)[0] == 0
    code, out, _ = run_cli(["compare", *runs, "--plot", tmp_path / "curves.png"], capsys)
    assert code == 0
    header, rule, *lines = out.strip().splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    # Only the field that differs; then the measures.
    assert columns == [
        "run", "latent_dim", "epochs_trained", "best_valid_elbo", "test_elbo",
        "log_likelihood", "khat_above_0.7", "estimate", "images",
    ]  # fmt: skip
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert [row[1] for row in cells] == ["4", "6"] and [row[2] for row in cells] == ["2", "2"]
    evaluation = json.loads((runs[1] / "evaluation.json").read_text())
    assert cells[1][5] == (
        f"{evaluation['log_likelihood']:.3f} ± {evaluation['standard_error']:.3f}"
    )
    assert cells[0][5] == ""  # not evaluated
    history = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert float(cells[0][3]) == round(max(r["valid_elbo"] for r in history), 3)
    assert (tmp_path / "curves.png").stat().st_size > 0
    code, out, _ = run_cli(["compare", *runs, "--csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["latent_dim"] for row in rows] == ["4", "6"]
    assert "vs_first_paired" not in rows[0]  # only one run evaluated: nothing to pair

    # both evaluated (the first on its first 40 test images): the second against the first,
    # on the images they share
    assert run_cli(["evaluate", runs[0], "--num-samples", "50", "--max-images", "40",
                    "--quiet"], capsys)[0] == 0  # fmt: skip
    code, out, _ = run_cli(["compare", *runs, "--csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    first, second = (per_image_log_likelihood(run) for run in runs)
    differences = [second[i] - first[i] for i in range(40)]
    mean = sum(differences) / 40
    se = (sum((d - mean) ** 2 for d in differences) / 39 / 40) ** 0.5
    assert rows[0]["vs_first_paired"] == ""
    assert rows[1]["vs_first_paired"] == f"{mean:+.3f} ± {se:.3f} (40 images)"
    assert (rows[0]["estimate"], rows[0]["images"]) == ("IS K=50", "40")

    # an AIS evaluation shows beside the IS one, with its steps, chains and images
    annealing = ["--method", "ais", "--steps", "3", "--chains", "2", "--leapfrog-steps", "2"]
    command = ["evaluate", runs[1], *annealing, "--max-images", "6", "--quiet"]
    assert run_cli(command, capsys)[0] == 0
    code, out, _ = run_cli(["compare", *runs, "--csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    ais = json.loads((runs[1] / "evaluation-ais.json").read_text())
    assert rows[1]["ais_log_likelihood"] == (
        f"{ais['log_likelihood']:.3f} ± {ais['standard_error']:.3f}"
    )
    assert (rows[1]["ais_estimate"], rows[1]["ais_images"]) == ("AIS T=3×C=2", "6")
    assert rows[0]["ais_estimate"] == "" and rows[1]["estimate"] == "IS K=50"


def write_per_image(run_dir, values: dict[int, float]) -> None:
    run_dir.mkdir()
    lines = ["index,label,log_likelihood"] + [f"{i},-1,{v}" for i, v in values.items()]
    (run_dir / "evaluation_per_datapoint.csv").write_text("\n".join(lines) + "\n")


def test_paired_difference_is_over_the_shared_images_and_exact_when_constant(tmp_path):
    write_per_image(tmp_path / "b", {0: -90.0, 1: -80.5, 2: -101.25, 3: -70.0})
    write_per_image(tmp_path / "a", {0: -89.5, 1: -80.0, 2: -100.75, 9: -1.0})
    paired = paired_difference(tmp_path / "a", tmp_path / "b")
    # images 0-2 alone, each 0.5 nats better: the difference is exact, its error zero
    assert (paired.mean, paired.standard_error, paired.images) == (0.5, 0.0, 3)
    assert paired.share_better == 1.0
    write_per_image(tmp_path / "c", {0: -91.0, 1: -80.5, 2: -100.25})  # -1, 0, +1
    paired = paired_difference(tmp_path / "c", tmp_path / "b")
    assert paired.mean == 0.0 and paired.standard_error == pytest.approx((1 / 3) ** 0.5)
    assert paired.share_better == pytest.approx(1 / 3)
    write_per_image(tmp_path / "d", {9: -1.0})
    assert paired_difference(tmp_path / "d", tmp_path / "b") is None  # nothing shared
    assert paired_difference(tmp_path / "missing", tmp_path / "b") is None  # not evaluated


def test_compare_refuses_a_missing_run_folder_in_one_line(tmp_path, capsys):
    code = main(["compare", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err
