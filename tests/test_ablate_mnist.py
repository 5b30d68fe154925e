"""scripts/ablate_mnist.py: each variant is row A plus one group of row Ab's choices, and a
small-scale run trains, scores and reports them in a section that reproduce_mnist.py keeps."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pyro_vae.cli import build_parser, train_config_from_args
from pyro_vae.config import differing_fields
from tests.conftest import load_script


@pytest.fixture(scope="module")
def ablate():
    return load_script("ablate_mnist")


def config_of(module, row, tmp_path: Path, argv: list[str] = ()):
    args = module.parse_args(["--runs-dir", str(tmp_path), *argv])
    command = module.train_command(row, tmp_path / row.key, args)
    return train_config_from_args(build_parser().parse_args(command[3:]))


def test_variants_split_row_abs_choices_between_them(ablate, tmp_path):
    """A-eps, A-beta1 and A-init each differ from row A in their own fields only; A-beta1
    and A-init together in exactly those where row Ab differs; all stop at the same epoch
    of the schedule."""
    a = config_of(ablate, ablate.A, tmp_path)
    assert a.epochs == 364  # the end of stage i = 5: every variant ends at lr 1e-3·10^(-5/7)
    ab = config_of(ablate, ablate.ROWS["Ab"], tmp_path)
    fields = {
        key: {
            change.split(":")[0] for change in differing_fields(a, config_of(ablate, v, tmp_path))
        }
        for key, v in ablate.VARIANTS.items()
    }
    assert fields["A"] == set()
    assert (
        fields["A-eps"] == {"adam_eps"}
        and config_of(ablate, ablate.VARIANTS["A-eps"], tmp_path).adam_eps == 1e-8
    )
    assert fields["A-beta1"] == {"adam_beta1"}
    assert fields["A-init"] == {"weight_init", "output_bias", "guide_scale"}
    ab_fields = {change.split(":")[0] for change in differing_fields(a, ab, ignore=("epochs",))}
    assert fields["A-beta1"] | fields["A-init"] == ab_fields


def test_mean_test_elbo_is_the_mean_and_sd_over_the_last_epochs(ablate):
    history = [{"epoch": e, "test_elbo": -100.0 + e} for e in range(8)]
    assert ablate.mean_test_elbo(history, 6, 3) == pytest.approx((-95.0, 1.0))  # epochs 4, 5, 6
    assert ablate.mean_test_elbo(history, 9, 3) is None  # epochs 8 and 9 are not trained yet
    assert ablate.mean_test_elbo([{"epoch": 1, "test_elbo": None}], 1, 1) is None


def test_small_scale_run_reports_and_reproduce_mnist_keeps_the_section(ablate, tmp_path, capsys):
    runs, results, figures = tmp_path / "runs", tmp_path / "RESULTS.md", tmp_path / "figures"
    argv = ["--dataset", "digits", "--epochs", "2", "--window", "2", "--num-samples", "8",
            "--max-images", "10", "--max-minutes", "5", "--runs-dir", str(runs),
            "--results", str(results), "--figures-dir", str(figures),
            "--reference-run", str(runs / "A-init")]  # fmt: skip
    assert ablate.main([*argv, "--variants", "A"]) == 0  # --variants: those alone
    out = capsys.readouterr().out
    assert "row A: evaluated epoch 2" in out and "A-eps" not in out
    assert ablate.main(argv) == 0
    out = capsys.readouterr().out
    assert "row A: evaluation of epoch 2 is current" in out
    assert "row A-beta1: evaluated epoch 2" in out
    text = results.read_text()
    number = r"-?\d+\.\d\d"
    assert re.search(rf"\| A \| .* \| 2 \| {number} \(sd \d\.\d\d\) \|  \| \d+\.\d\d ± ", text)
    for key in ("A-eps", "A-beta1", "A-init"):  # each with its paired NLL difference from A
        assert re.search(
            rf"\| {key} \| .* \| [+-]\d+\.\d\d \| \d+\.\d\d ± \d+\.\d\d \| [+-]\d", text
        )
    # The reference stands in for row Ab's run: its ELBO is shown, and how it differs.
    assert re.search(r"\| Ab \| .* \| 2 \| .* \|  \|  \|", text)
    table = text[text.index("| variant |") :].split("\n\n")[0]  # the reference row inside it
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == [
        "| A", "| A-eps", "| A-beta1", "| A-init", "| Ab"]  # fmt: skip
    assert re.search(r"Training: A \d+ s, A-eps \d+ s, A-beta1 \d+ s, A-init \d+ s; ", text)
    assert "its run has another config (command -> run): adam_beta1: 0.99 -> 0.9" in text
    assert "![test ELBO per epoch of each variant](figures/mnist-ablation.png)" in text
    assert (figures / "mnist-ablation.png").stat().st_size > 1000

    # reproduce_mnist.py rewrites RESULTS.md around the section; a new machine, without the
    # run folders, leaves it as it was.
    reproduce = load_script("reproduce_mnist")
    shutil.rmtree(runs)
    reproduce.write_results(reproduce.parse_args(
        ["--runs-dir", str(runs), "--results", str(results), "--figures-dir", str(figures),
         "--notes", str(tmp_path / "none.md")]))  # fmt: skip
    section = text[text.index("<!-- ablation") :]
    assert section in results.read_text()
    before = results.read_text()
    assert ablate.main([*argv[:-8], "--runs-dir", str(runs), "--max-minutes", "0",
                        "--results", str(results), "--figures-dir", str(figures)]) == 0  # fmt: skip
    assert "kept as it was" in capsys.readouterr().out
    assert results.read_text() == before
