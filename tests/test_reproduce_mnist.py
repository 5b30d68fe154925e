"""scripts/reproduce_mnist.py: every row is a valid command, and the GPU rows run at small scale."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest
import torch

from pyro_vae.cli import build_parser, train_config_from_args
from pyro_vae.run import read_config, read_history
from tests.conftest import load_script
from tests.test_compare import write_per_image


@pytest.fixture(scope="module")
def reproduce():
    return load_script("reproduce_mnist")


def train_config(reproduce, row, runs_dir):
    """The config of the ``pyro-vae train`` command that starts the row's run."""
    args = reproduce.parse_args(["--runs-dir", str(runs_dir)])
    command = reproduce.train_command(row, runs_dir / row.key, args)
    assert command[3] == "train" and "--resume" not in command
    return train_config_from_args(build_parser().parse_args(command[3:]))


def test_every_row_is_a_valid_train_command(reproduce, tmp_path):
    for row in reproduce.ROWS.values():
        config = train_config(reproduce, row, tmp_path)
        assert config.dataset == "mnist" and config.binarize is None  # dynamic, the default
        expected = {"A": "trace", "Ab": "trace", "B": "iwae", "Bb": "iwae", "C": "iwae-dreg",
                    "Cb": "iwae-dreg", "F1": "iwae"}  # fmt: skip
        assert config.elbo == expected.get(row.key, config.elbo)
        if row.key in ("A", "Ab", "B", "Bb", "C", "Cb", "F1"):  # Burda et al.'s network, schedule
            assert (config.latent_dim, config.hidden_dims) == (50, [200, 200])
            assert (config.activation, config.batch_size, config.valid_size) == ("tanh", 20, 0)
            assert (config.lr_schedule, config.epochs) == ("burda", 3280)
            assert config.adam_eps == 1e-4  # their code's Adam
            burda = row.key in ("Ab", "Bb", "Cb")  # and the rest of their code's choices
            assert config.weight_init == ("glorot-uniform" if burda else "torch")
            assert config.output_bias == ("data-logit" if burda else "torch")
            assert config.guide_scale == ("exp" if burda else "softplus")
            assert config.adam_beta1 == (0.99 if burda else 0.9)
        else:  # Tomczak & Welling's
            assert config.adam_eps == 1e-8  # torch's default
            assert config.lr == 5e-4
            if row.key not in ("Ds", "Es", "Ecs"):  # the controls, with N(0, I) for p(z)
                assert (config.prior, config.prior_components) == ("vamp", 500)
            assert (config.kl_warmup_epochs, config.early_stopping) == (100, 50)
            # Row Dh is row D with the authors' clamped pseudo-inputs, and only that; row Dv
            # is row Dh with the authors' bounded log-variance of q(z|x), and only that; row
            # Da is row Dv with the authors' initialization and optimizer.
            authors = row.key in ("Dh", "Dv", "Da")
            assert config.pseudo_inputs == ("hardtanh" if authors else "free")
            bounded = row.key in ("Dv", "Da")
            assert config.guide_scale == ("bounded-logvar" if bounded else "softplus")
            assert config.weight_init == ("he-normal" if row.key == "Da" else "torch")
            assert config.optimizer == ("adam-normgrad" if row.key == "Da" else "adam")
    rows = reproduce.ROWS
    added = {key: [f for f in rows[key].flags if f not in rows[base].flags]
             for key, base in (("Dh", "D"), ("Dv", "Dh"), ("Da", "Dv"), ("Ab", "A"),
                               ("Bb", "B"), ("Cb", "C"))}  # fmt: skip
    assert added == {
        "Dh": ["--pseudo-inputs", "hardtanh"],
        "Dv": ["--guide-scale", "bounded-logvar"],
        "Da": ["--weight-init", "he-normal", "--optimizer", "adam-normgrad"],
        "Ab": [
            "--weight-init",
            "glorot-uniform",
            "--output-bias",
            "data-logit",
            "--guide-scale",
            "exp",
            "--adam-beta1",
            "0.99",
        ],
        "Bb": list(reproduce.BURDA_CODE),  # the same choices as Ab, flag for flag
        "Cb": list(reproduce.BURDA_CODE),
    }
    assert (rows["C"].against, rows["Cb"].against) == ("B", "Bb")  # DReG against plain IWAE
    # Ds, Es and Ecs are D, E and Ec with N(0, I) in place of the VampPrior, and nothing else
    # changed; E is the paper's two-level model, Ec Burda et al.'s chain, otherwise the same.
    two_level = {key: train_config(reproduce, rows[key], tmp_path) for key in ("E", "Ec")}
    assert (two_level["E"].model, two_level["Ec"].model) == ("hvae-skip", "hvae")
    assert dataclasses.replace(two_level["E"], model="hvae") == two_level["Ec"]
    for key in ("D", "E", "Ec"):
        vamp, standard = (
            dataclasses.asdict(train_config(reproduce, rows[k], tmp_path)) for k in (key, key + "s")
        )
        assert standard["prior"] == "standard-normal"
        assert {name for name in vamp if vamp[name] != standard[name]} == {
            "prior",
            "prior_components",
        }


def test_gpu_rows_are_skipped_on_a_cpu_unless_capped(reproduce, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "RESULTS.md"
    common = ["--runs-dir", str(tmp_path / "runs"), "--results", str(out)]
    figures = ["--figures-dir", str(tmp_path / "figures"), "--notes", str(tmp_path / "none.md")]
    assert reproduce.main(["--rows", "F1", "F2", "--max-minutes", "0", *common, *figures]) == 0
    said = capsys.readouterr().out
    assert "row F1 needs a GPU" in said and "row F2 needs a GPU" in said
    table = out.read_text()
    assert "| F1 | IWAE k=50, the network of A | not run: needs a GPU | | | | |" in table
    # Every row of the table has its ten cells.
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert {line.count(" |") for line in rows} == {10}


def test_rows_f_run_continue_and_report_at_small_scale(reproduce, tmp_path, capsys):
    """The GPU rows' commands on digits for an epoch: trained, evaluated, reported; a second
    invocation finds the evaluation current; a larger --epochs continues the run."""
    runs, results, figures = tmp_path / "runs", tmp_path / "RESULTS.md", tmp_path / "figures"
    small = ["--dataset", "digits", "--num-samples", "8", "--max-images", "10", "--jobs", "2"]
    paths = ["--runs-dir", str(runs), "--results", str(results), "--figures-dir", str(figures)]
    argv = [*small, *paths, "--notes", str(tmp_path / "none.md"), "--max-minutes", "5"]
    assert reproduce.main(["--rows", "F1", "F2", "--epochs", "1", *argv]) == 0
    assert "row F1: evaluated epoch 1" in capsys.readouterr().out
    text = results.read_text()
    for key in ("F1", "F2"):
        record = json.loads((runs / key / "reproduce.json").read_text())
        assert (record["trained_epochs"], record["num_samples"], record["max_images"]) == (1, 8, 10)
        nll = -record["evaluation"]["log_likelihood"]
        assert re.search(rf"\| {key} \| .* \| 1 of 1 \| .* \| {nll:.2f} ± ", text)
        assert (figures / f"mnist-{key}.png").stat().st_size > 1000
        assert f"![learning curve of row {key}](figures/mnist-{key}.png)" in text
        assert (figures / f"mnist-{key}-late.png").stat().st_size > 1000
        assert f"second half of its epochs](figures/mnist-{key}-late.png)" in text
    assert read_config(runs / "F2").guide == "iaf" and read_config(runs / "F2").model == "hvae"

    assert reproduce.main(["--rows", "F1", "--epochs", "1", *argv]) == 0
    assert "row F1: evaluation of epoch 1 is current" in capsys.readouterr().out

    assert reproduce.main(["--rows", "F1", "--epochs", "2", *argv]) == 0
    assert "row F1: evaluated epoch 2" in capsys.readouterr().out
    assert [row["epoch"] for row in read_history(runs / "F1")] == [0, 1, 2]
    assert "resume" in (runs / "F1.log").read_text()  # continued, not started afresh
    # Each evaluation is kept by its epochs, for rows paired with this one at equal epochs.
    for epochs in (1, 2):
        kept = reproduce.kept_evaluation(runs / "F1", epochs)
        assert json.loads((kept / "reproduce.json").read_text())["trained_epochs"] == epochs
        assert (kept / "evaluation_per_datapoint.csv").stat().st_size > 0
    per_image = "evaluation_per_datapoint.csv"
    last = (runs / "F1" / per_image).read_text()
    assert (reproduce.kept_evaluation(runs / "F1", 2) / per_image).read_text() == last

    # A new machine starts without the run folders: rewriting the table keeps what it said
    # of a row whose folder is gone, line and section, word for word.
    text = results.read_text()
    line = next(line for line in text.splitlines() if line.startswith("| F1 |"))
    section = text[text.index("### Row F1:") : text.index("### Row F2:")]
    shutil.rmtree(runs / "F1")
    assert reproduce.main(["--rows", "F1", "--epochs", "2", *argv[:-2], "--max-minutes", "0"]) == 0
    assert "row F1: nothing to evaluate" in capsys.readouterr().out
    again = results.read_text()
    assert again == text and line in again and section in again


def test_row_c_is_measured_against_b_image_by_image(reproduce, tmp_path):
    """Row C's target is "below B": its cell is C's NLL minus B's on the images both
    evaluated, paired, with B's epochs beside it in the row's section."""
    write_per_image(tmp_path / "B", {0: -90.0, 1: -80.0, 2: -100.0})
    write_per_image(tmp_path / "C", {0: -89.0, 1: -80.0, 2: -99.5})  # 1, 0, 0.5 nats better
    (tmp_path / "B" / "reproduce.json").write_text(json.dumps({"trained_epochs": 7}))
    args = reproduce.parse_args(["--runs-dir", str(tmp_path)])
    cell, line = reproduce.against_row(reproduce.ROWS["C"], args)
    assert cell == "-0.50 ± 0.29 against B after 7 epochs"  # SE: sd 0.5 of the differences / √3
    assert "row B (7 epochs) on the same 3 test images: NLL -0.500 ± 0.289" in line
    assert "lower on 67% of the images" in line
    assert reproduce.against_row(reproduce.ROWS["B"], args) is None  # B has no such target


def test_a_row_is_paired_with_the_other_rows_evaluation_after_as_many_epochs(reproduce, tmp_path):
    """Cb after 5 epochs against Bb, which has trained on to 9: Bb's evaluation after 5
    epochs, kept when Bb was evaluated again, fills the cell; the pairing with Bb's latest
    follows in the section. Once Cb too has 9 epochs, the two are one pairing."""
    args = reproduce.parse_args(["--runs-dir", str(tmp_path)])

    def evaluated(folder, epochs: int, values: dict[int, float]) -> None:
        write_per_image(folder, values)
        (folder / "reproduce.json").write_text(json.dumps({"trained_epochs": epochs}))

    evaluated(tmp_path / "Bb", 9, {0: -89.0, 1: -80.0})  # Bb's latest
    (tmp_path / "Bb" / "evaluations").mkdir()
    evaluated(reproduce.kept_evaluation(tmp_path / "Bb", 5), 5, {0: -90.0, 1: -81.0})
    evaluated(tmp_path / "Cb", 5, {0: -89.5, 1: -80.5})  # 0.5 above Bb then, 0.5 below now
    cell, lines = reproduce.against_row(reproduce.ROWS["Cb"], args)
    assert cell == "-0.50 ± 0.00 against Bb after 5 epochs"
    same, latest = lines.splitlines()
    assert same.startswith("- against row Bb (5 epochs) on the same 2 test images: NLL -0.500")
    assert latest.startswith("- against row Bb (9 epochs) on the same 2 test images: NLL +0.500")
    assert latest.endswith("lower on 0% of the images")

    shutil.rmtree(tmp_path / "Cb")
    evaluated(tmp_path / "Cb", 9, {0: -88.5, 1: -80.0})
    evaluated(reproduce.kept_evaluation(tmp_path / "Bb", 9), 9, {0: -89.0, 1: -80.0})
    cell, lines = reproduce.against_row(reproduce.ROWS["Cb"], args)
    assert cell == "-0.25 ± 0.25 against Bb after 9 epochs" and len(lines.splitlines()) == 1


def test_a_row_behind_the_other_is_paired_with_its_next_evaluation_and_keeps_earlier_ones(
    reproduce, tmp_path
):
    """Cb after 7 epochs, Bb evaluated after 5, 9 and 12: no evaluation of Bb after 7, so
    the cell pairs Cb with Bb after 9 (the fewest epochs beyond Cb's, a comparison that
    leans Bb's way); the lines add Cb's latest against Bb's latest, and Cb after 5 against
    Bb after 5, the equal-epoch pairing of an earlier session, which is not lost."""
    args = reproduce.parse_args(["--runs-dir", str(tmp_path)])
    for key, epochs, values in (
        ("Bb", 5, {0: -90.0, 1: -81.0}),
        ("Bb", 9, {0: -89.0, 1: -80.0}),
        ("Bb", 12, {0: -88.5, 1: -80.0}),
        ("Cb", 5, {0: -89.5, 1: -80.5}),
        ("Cb", 7, {0: -89.0, 1: -79.0}),
    ):
        kept = reproduce.kept_evaluation(tmp_path / key, epochs)
        kept.parent.mkdir(parents=True, exist_ok=True)
        write_per_image(kept, values)
        (kept / "reproduce.json").write_text(json.dumps({"trained_epochs": epochs}))
    for key, epochs in (("Bb", 12), ("Cb", 7)):  # the latest, in the run folder itself
        latest = reproduce.kept_evaluation(tmp_path / key, epochs)
        for name in ("evaluation_per_datapoint.csv", "reproduce.json"):
            shutil.copy2(latest / name, tmp_path / key / name)
    assert sorted(reproduce.evaluations(tmp_path / "Bb")) == [5, 9, 12]
    assert reproduce.evaluations(tmp_path / "Bb")[12] == tmp_path / "Bb"

    cell, lines = reproduce.against_row(reproduce.ROWS["Cb"], args)
    assert cell == "-0.50 ± 0.50 against Bb after 9 epochs"
    beyond, latest, earlier = lines.splitlines()
    assert beyond.startswith("- against row Bb (9 epochs) on the same 2 test images: NLL -0.500")
    assert latest.startswith("- against row Bb (12 epochs) on the same 2 test images: NLL -0.250")
    assert earlier.startswith(
        "- after 5 epochs of its own, against row Bb (5 epochs) on the same 2 test images: "
        "NLL -0.500 ± 0.000"
    )


def test_row_dv_keeps_the_papers_difference_and_adds_the_pairing_with_dh(reproduce, tmp_path):
    """Row Dv has a published number: its cell is the difference from the paper, and its
    section gives, beside it, Dv minus Dh image by image (one difference between them)."""
    args = reproduce.parse_args(["--runs-dir", str(tmp_path), "--figures-dir", str(tmp_path)])
    for key, values in (("Dh", {0: -90.0, 1: -80.0, 2: -100.0}), ("Dv", {0: -91.0, 1: -80.5})):
        write_per_image(tmp_path / key, values)
        # Dv's run began before the row asked for ε = 1e-4 (say).
        write_evaluated_run(reproduce, args, key, 9, {"adam_eps": 1e-4} if key == "Dv" else {})
    line, section = reproduce.row_report(reproduce.ROWS["Dv"], args, {})
    assert "| 84.50 ± 0.20 | 88.00 | 50.0% | 82.38 | +2.12 | ≤ 82.88 |" in line
    assert "- against row Dh (9 epochs) on the same 2 test images: NLL +0.750 ± 0.250" in section
    # A run whose config is not the one the row's command now starts says how it differs.
    changed = "- trained before the row's command last changed, so with another config "
    assert f"{changed}(command -> run): adam_eps: 1e-08 -> 0.0001\n" in section
    assert changed not in reproduce.row_report(reproduce.ROWS["Dh"], args, {})[1]


def write_evaluated_run(
    reproduce, args, key: str, evaluated: int, changes: dict, epochs: int = 1
) -> None:
    """A run folder of row ``key`` as training and ``reproduce_mnist.py`` leave it: config,
    ``epochs`` epochs of 1,800 s each, and an evaluation of epoch ``evaluated``."""
    run_dir = args.runs_dir / key
    run_dir.mkdir(exist_ok=True)
    config = train_config(reproduce, reproduce.ROWS[key], args.runs_dir)
    config = dataclasses.replace(config, **changes)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    history = [{"epoch": 0, "seconds": None}]
    history += [{"epoch": e, "seconds": 1800.0, "train_elbo": -99} for e in range(1, epochs + 1)]
    (run_dir / "metrics.jsonl").write_text("\n".join(map(json.dumps, history)))
    summary = {"log_likelihood": -84.5, "standard_error": 0.2, "elbo": -88.0, "num_images": 3}
    summary["share_khat_above_0.7"] = 0.5
    record = {"trained_epochs": evaluated, "num_samples": 5000, "max_images": None}
    record |= {"evaluation_seconds": 1.0, "parameters_from": "best", "device": "cpu"}
    record |= {"versions": "v", "date": "d", "evaluation": summary}
    (run_dir / "reproduce.json").write_text(json.dumps(record))


def test_a_run_trained_past_its_evaluation_reports_the_evaluated_epochs(reproduce, tmp_path):
    """A session can end while a row trains on: its line and curve stop at the epoch the
    evaluation saw (2 of 3 here), and the training time with them."""
    args = reproduce.parse_args(["--runs-dir", str(tmp_path), "--figures-dir", str(tmp_path)])
    write_evaluated_run(reproduce, args, "Bb", evaluated=2, changes={}, epochs=3)
    line, section = reproduce.row_report(reproduce.ROWS["Bb"], args, {})
    assert "| 2 of 3280 | 1.00 h | 84.50 ± 0.20 |" in line
    assert "- epochs: 2 of 3280; training 3600 s;" in section


def test_threads_default_to_the_cores_per_job_and_can_be_set(reproduce, monkeypatch, capsys):
    import experiment_runs  # importable once the script has put scripts/ on sys.path

    monkeypatch.setattr(experiment_runs.os, "cpu_count", lambda: 8)
    assert reproduce.parse_args(["--jobs", "2"]).threads == 4
    assert reproduce.parse_args(["--jobs", "2", "--threads", "1"]).threads == 1
    with pytest.raises(SystemExit) as exit_info:
        reproduce.parse_args(["--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err


def test_the_late_curve_draws_the_other_row_only_where_its_run_folder_has_a_history(
    reproduce, tmp_path
):
    """Cb's figure of its later epochs adds Bb's curve and the difference when Bb's run
    folder is on this machine, and says which row it drew (None: Cb alone)."""
    history = [{"epoch": e, "test_elbo": -92.0 + 0.001 * e} for e in range(1, 61)]
    figure = tmp_path / "late.png"
    assert reproduce.save_late_curve(reproduce.ROWS["Cb"], history, tmp_path, figure) is None
    alone = figure.stat().st_size
    (tmp_path / "Bb").mkdir()
    rows = [{"epoch": e, "test_elbo": -92.5 + 0.001 * e} for e in range(0, 90)]
    (tmp_path / "Bb" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert reproduce.save_late_curve(reproduce.ROWS["Cb"], history, tmp_path, figure) == "Bb"
    assert figure.stat().st_size > alone  # a second panel: the difference
    assert reproduce.save_late_curve(reproduce.ROWS["Bb"], history, tmp_path, figure) is None


def test_a_row_carried_from_results_md_takes_the_current_reference(reproduce, tmp_path):
    """A row whose run folder is gone keeps its measurement from RESULTS.md, and its
    published value, difference and target come from ``ROWS`` as they are now: a
    corrected reference (issue 39: static -> dynamic column) reaches every such row."""
    args = reproduce.parse_args(["--runs-dir", str(tmp_path), "--figures-dir", str(tmp_path)])
    row = reproduce.ROWS["D"]
    old_line = (
        f"| D | {row.configuration} | 294 of 2000 | 2.76 h | 83.00 ± 0.22 | 86.84 | 79.7% | "
        "85.57 | -2.57 | within 0.5 nats |"
    )
    old_section = "### Row D: ...\n\n- published: 85.57 (the static column)\n"
    line, section = reproduce.row_report(row, args, {"D": (old_line, old_section)})
    assert line.endswith("| 83.00 ± 0.22 | 86.84 | 79.7% | 82.38 | +0.62 | ≤ 82.88 |")
    assert f"- published: 82.38 ({row.source})" in section and "85.57" not in section
    # a difference measured against another row stays; a line without a measurement is
    # written afresh
    cb = reproduce.ROWS["Cb"]
    paired = f"| Cb | {cb.configuration} | 3280 of 3280 | 11.59 h | 84.95 ± 0.22 | 91.30 | "
    paired += "90.3% | — | -0.22 ± 0.03 against Bb after 3,280 epochs | below Bb |"
    assert reproduce.row_report(cb, args, {"Cb": (paired, "")})[0] == paired
    unmeasured = f"| E | {reproduce.ROWS['E'].configuration} | not run yet | | | | | 81.00 | | x |"
    line, _ = reproduce.row_report(reproduce.ROWS["E"], args, {"E": (unmeasured, "")})
    assert line.endswith("| not run yet | | | | | 81.24 | | ≤ 81.74 |")


def test_a_row_under_early_stopping_says_where_it_stands_against_the_rule(reproduce, tmp_path):
    args = reproduce.parse_args(["--runs-dir", str(tmp_path), "--figures-dir", str(tmp_path)])
    write_evaluated_run(reproduce, args, "D", evaluated=120, changes={}, epochs=120)
    history = read_history(tmp_path / "D")
    for h in history[1:]:  # rises by 0.01 a epoch to epoch 100, then stays
        h["valid_elbo"] = -90.0 + 0.01 * min(h["epoch"], 100)
    (tmp_path / "D" / "metrics.jsonl").write_text("\n".join(map(json.dumps, history)))
    _, section = reproduce.row_report(reproduce.ROWS["D"], args, {})
    assert (
        "- early stopping (50 epochs without a better validation ELBO): not reached; the best "
        "validation ELBO rose 0.30 nats over the last 50 epochs, and last rose at epoch 100 "
        "of 120" in section
    )
    stopped = history + [{"epoch": 150, "seconds": 1.0, "valid_elbo": -89.5}]
    assert reproduce.stopping_rule_line(stopped, 50) == (
        "- early stopping: the rule fired at epoch 150, 50 epochs after the best validation "
        "ELBO (epoch 100)"
    )
    assert reproduce.stopping_rule_line(history[:30], 50).endswith(
        "the best validation ELBO has not yet run 50 epochs, and last rose at epoch 29 of 29"
    )
    assert reproduce.stopping_rule_line(history, 0) is None
