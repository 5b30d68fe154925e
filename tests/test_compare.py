"""pyro-vae compare: run folders side by side."""

import csv
import io
import json

from pyro_vae.cli import main
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
        "log_likelihood", "khat_above_0.7",
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


def test_compare_refuses_a_missing_run_folder_in_one_line(tmp_path, capsys):
    code = main(["compare", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err
