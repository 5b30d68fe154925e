"""scripts/semisupervised_mnist.py: its commands, a small-scale run, and its RESULTS.md
section, which reproduce_mnist.py keeps when it rewrites the file."""

from __future__ import annotations

import json
import subprocess

import pytest

from pyro_vae.cli import build_parser, train_config_from_args
from tests.conftest import load_script


@pytest.fixture(scope="module")
def semisupervised():
    return load_script("semisupervised_mnist")


def test_every_row_is_kingmas_m2(semisupervised, tmp_path):
    args = semisupervised.parse_args(["--runs-dir", str(tmp_path)])
    assert args.labels == [100, 600, 1000, 3000]
    for labels in args.labels:
        command = semisupervised.train_command(labels, tmp_path / str(labels), args)
        config = train_config_from_args(build_parser().parse_args(command[3:]))
        assert (config.model, config.labels, config.dataset) == ("m2", labels, "mnist")
        assert (config.latent_dim, config.hidden_dims, config.lr) == (50, [500], 3e-4)
        assert config.classifier_weight is None  # Kingma et al.'s 0.1·N/labels
        assert config.labelled_weighting is None  # train's default, batch
        assert config.beta == 1.0
    argv = ["--runs-dir", str(tmp_path), "--labelled-weighting", "data", "--beta", "2"]
    command = semisupervised.train_command(100, tmp_path / "100", semisupervised.parse_args(argv))
    config = train_config_from_args(build_parser().parse_args(command[3:]))
    assert (config.labelled_weighting, config.beta) == ("data", 2.0)


def test_small_run_writes_its_section_and_reproduce_mnist_keeps_it(semisupervised, tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nold text\n")
    common = ["--runs-dir", str(tmp_path / "runs"), "--results", str(results)]
    common += ["--figures-dir", str(tmp_path / "figures"), "--notes", str(tmp_path / "no.md")]
    small = ["--labels", "20", "--dataset", "digits", "--epochs", "1", "--max-minutes", "5"]
    assert semisupervised.main([*small, *common]) == 0
    text = results.read_text()
    assert text.startswith("# Results\n\nold text\n")
    section = text.split("<!-- semisupervised: begin -->")[1].split("<!-- semisupervised: end")[0]
    row = next(line for line in section.splitlines() if line.startswith("| 20 |"))
    assert row.split(" | ")[1] == "1 of 1"
    assert float(row.split(" | ")[3].rstrip("%")) < 100
    assert float(row.split(" | ")[5].rstrip("%")) < 90  # the classifier alone learns too
    alone = json.loads((tmp_path / "runs" / "m2-20" / "classifier_alone.json").read_text())
    assert alone["passes"] % 10 == 0 and 0 <= alone["valid_error"] < 0.9  # chosen by validation
    assert "| 100 | not run yet | | | | | | 11.97% | |" in section
    for picture in ("m2-test-error.png", "m2-20-analogies.png", "m2-20-class_samples.png"):
        assert (tmp_path / "figures" / picture).stat().st_size > 0
    # another configuration, trained by the script's command into a folder of its own
    variants = tmp_path / "variants"
    args = semisupervised.parse_args([*small, "--beta", "2", "--runs-dir", str(variants)])
    command = semisupervised.train_command(20, variants / "beta-2", args)
    subprocess.run(command, check=True, capture_output=True)
    # rerun: the section is replaced, not repeated, and sets the variant beside its row
    assert semisupervised.main([*small, *common, "--variant-runs-dir", str(variants)]) == 0
    text = results.read_text()
    assert text.count("<!-- semisupervised: begin -->") == 1
    section = text.split("<!-- semisupervised: begin -->")[1].split("<!-- semisupervised: end")[0]
    variant = next(line for line in section.splitlines() if line.startswith("| 20 | beta"))
    cells = [cell.strip() for cell in variant.strip("|").split("|")]
    assert cells[1:3] == ["beta: 1.0 -> 2.0", "1"]
    error = float(cells[3].rstrip("%"))
    assert cells[6] == "1"  # both trained one epoch: compared there
    mine, theirs = (float(cell.rstrip("%")) for cell in cells[7].split(" / "))
    assert mine == error and float(cells[8]) == pytest.approx(mine - theirs, abs=0.011)
    # reproduce_mnist.py rewrites the file around it
    reproduce = load_script("reproduce_mnist")
    figures = ["--figures-dir", str(tmp_path / "figures"), "--notes", str(tmp_path / "no.md")]
    runs = ["--runs-dir", str(tmp_path / "mnist"), "--results", str(results)]
    assert reproduce.main(["--rows", "A", "--max-minutes", "0", *runs, *figures]) == 0
    rewritten = results.read_text()
    assert "old text" not in rewritten and "| A |" in rewritten
    assert section in rewritten
    # A row measured on another machine, whose run folder is not here, keeps its lines.
    measured = "| 100 | 83 of 1000 | 2.06 h | 17.98% | 16.55% | 24.49% | 99.93 | 11.97% | +6.01 |"
    command = "- 100 labels: `pyro-vae train --model m2 --labels 100`; 83 epochs, 7416 s"
    rewritten = rewritten.replace("| 100 | not run yet | | | | | | 11.97% | |", measured)
    results.write_text(rewritten.replace("- 20 labels: ", f"{command}\n- 20 labels: ", 1))
    assert semisupervised.main([*small, *common, "--max-minutes", "0"]) == 0
    section = results.read_text().split("<!-- semisupervised: begin -->")[1]
    assert measured in section and command in section
    assert "- 100 labels: as this file last gave them; their run folders" in section
    assert next(line for line in section.splitlines() if line.startswith("| 20 |")) == row
    assert "| 600 | not run yet |" in section  # never measured: nothing to keep


def test_a_machine_without_the_run_folders_keeps_the_section(semisupervised, tmp_path, capsys):
    """Run folders do not outlive a machine: with none of them, the section stays as it was."""
    results = tmp_path / "RESULTS.md"
    section = "<!-- semisupervised: begin -->\n| 100 | 83 of 1000 | measured |\n"
    results.write_text(f"# Results\n\n{section}<!-- semisupervised: end -->\n")
    before = results.read_text()
    argv = ["--runs-dir", str(tmp_path / "new-machine"), "--results", str(results)]
    argv += ["--figures-dir", str(tmp_path / "figures"), "--max-minutes", "0"]
    assert semisupervised.main(argv) == 0
    assert "no M2 run folder under" in capsys.readouterr().out
    assert results.read_text() == before and not (tmp_path / "figures").exists()


def test_a_missing_variant_folder_is_refused_in_one_line(semisupervised, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        semisupervised.parse_args(["--variant-runs-dir", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("nowhere: no such folder")


def test_a_variant_is_compared_at_the_last_epoch_both_runs_reached(semisupervised):
    def history(errors: list[float], elbo: float) -> list[dict]:
        return [{"epoch": e, "test_error": err, "test_elbo": elbo} for e, err in enumerate(errors)]

    row = history([0.9, 0.30, 0.20, 0.15], -100.0)  # the paper configuration: 3 epochs
    errors = [0.9, 0.25, 0.10, 0.08, 0.05]  # 4 epochs, past the row
    longer = semisupervised.Variant(100, "beta: 1.0 -> 2.0", history(errors, -110.0))
    shorter = semisupervised.Variant(100, "alpha", history([0.9, 0.35], -99.0))
    stranger = semisupervised.Variant(7, "labels", history([0.9, 0.5], -99.0))  # no such row
    table = semisupervised.variant_table([longer, shorter, stranger], {100: row})
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert cells[0] == ["100", "beta: 1.0 -> 2.0", "4", "5.00%", "11.97%", "-6.97", "3",
                        "8.00% / 15.00%", "-7.00", "110.00 / 100.00"]  # fmt: skip
    assert cells[1][6:] == ["1", "35.00% / 30.00%", "+5.00", "99.00 / 100.00"]
    assert cells[2][4:] == ["—", "", "no epoch in common", "", "", ""]
