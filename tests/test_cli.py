import json
import subprocess
import sys

import pytest

from pyro_vae.cli import main
from tests.conftest import SHARED_DATA, needs_mnist
from tests.test_svi import RUN_FILES

SMALL = ["--epochs", "2", "--hidden-dims", "32", "--latent-dim", "4", "--device", "cpu", "--quiet"]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_evaluate_sample_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(["train", *SMALL, "--out", run_dir], capsys)
    assert code == 0, err
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    trained = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["test_elbo"]
    assert float(out.split("test ELBO: ")[1].split()[0]) == round(trained, 3)

    code, out, _ = run_cli(["evaluate", run_dir, "--num-samples", "200", "--quiet"], capsys)
    assert code == 0
    assert float(out.split("test ELBO: ")[1].split()[0]) == round(trained, 3)
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["num_images"] == 360 and evaluation["num_samples"] == 200
    assert evaluation["log_likelihood"] >= evaluation["elbo"]
    assert evaluation["trace_elbo"] == trained
    assert list(evaluation["bounds"]) == ["L_1", "L_5", "L_50"]
    rows = (run_dir / "evaluation_per_datapoint.csv").read_text().splitlines()
    assert rows[0] == "index,label,log_likelihood,elbo,L_1,L_5,L_50,khat,ess"
    assert len(rows) == 361
    assert (run_dir / "khat.png").stat().st_size > 0
    code, out, _ = run_cli(["evaluate", run_dir, "--elbo-only", "--split", "valid"], capsys)
    assert code == 0 and "valid ELBO" in out and "log p(x)" not in out

    code, out, _ = run_cli(["sample", run_dir, "--num", "9", "--out", tmp_path / "s.png"], capsys)
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0


def test_python_dash_m_is_the_same_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pyro_vae", "train", "--guide", "nope", "--out", tmp_path / "r"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "pyro-vae: error: unknown guide 'nope'; valid guide names: diag-normal, "
        "lowrank-normal, full-normal, iaf, planar, radial, spline, zuko-nsf, zuko-naf, mixture, "
        "student-t"
    )


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    flags = """--dataset --data-dir --no-download --binarize --prior --decoder --likelihood
        --encoder --guide --latent-dim --hidden-dims --activation --elbo --num-particles --lr
        --clip-norm --epochs --batch-size --eval-batch-size --seed --device --out --quiet"""
    for flag in flags.split():
        assert flag in text
    # A flag's help says what happens without it, not "(default: True)".
    assert "(default: True)" not in text and "a missing data set is downloaded" in " ".join(
        text.split()
    )


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyro-vae {version('pyro-vae')}"


def test_a_user_pair_run_without_a_builder_is_refused_by_evaluate_in_one_line(tmp_path, capsys):
    from pyro_vae import TrainConfig, train_pair
    from tests.linear_gaussian import PIXELS, LinearGaussian
    from tests.user_pairs import PyroDecoder, PyroEncoder

    x = LinearGaussian().sample(100).reshape(100, PIXELS)
    config = TrainConfig(epochs=1, batch_size=50)
    train_pair(PyroDecoder(), PyroEncoder(), x, config, tmp_path, progress=False)
    code, _, err = run_cli(["evaluate", tmp_path], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "user's own model/guide pair trained without a builder" in err
    assert "pyro_vae.load_pair(run_dir, model, guide)" in err and "builder=" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--dataset", "cifar"], "valid datasets: digits, mnist"),
        (["train", "--guide", "flowy"], "valid guide names: diag-normal, lowrank-normal"),
        (["train", "--flow-depth", "0"], "flow_depth must be an integer >= 1"),
        (["train", "--guide-rank", "0"], "guide_rank must be an integer >= 1"),
        (["train", "--mixture-components", "0"], "mixture_components must be an integer >= 1"),
        (["train", "--flow-hidden-dims", "-4"], "flow_hidden_dims must be a non-empty list"),
        (["train", "--kl-warmup-epochs", "-1"], "kl_warmup_epochs must be an integer >= 0"),
        (["train", "--beta", "0"], "beta must be a finite number > 0, got 0.0"),
        (["train", "--adam-eps", "0"], "adam_eps must be a finite number > 0, got 0.0"),
        (["train", "--beta", "nan"], "beta must be a finite number > 0, got nan"),
        (["train", "--prior", "vampire"], "valid prior names: standard-normal, learned-normal"),
        (["train", "--likelihood", "poisson"], "valid likelihood names: bernoulli, continuous"),
        (["train", "--decoder", "transformer"], "valid decoder names: mlp, conv"),
        (["train", "--encoder", "transformer"], "valid encoder names: mlp, conv"),
        (["train", "--likelihood-scale", "0"], "likelihood_scale must be a finite number > 0"),
        (["train", "--conv-channels", "0"], "conv_channels must be a non-empty list"),
        (["train", "--prior-components", "0"], "prior_components must be an integer >= 1"),
        (["train", "--prior", "vamp", "--guide", "planar"], "planar and radial flows cannot"),
        (["train", "--pseudo-inputs", "hardtanh"], "give --prior vamp or drop --pseudo-inputs"),
        (["train", "--prior", "vamp", "--pseudo-inputs", "tanh"], "valid values: free, hardtanh"),
        (["train", "--guide-scale", "tanh"], "valid values: softplus, bounded-logvar, exp"),
        (["train", "--adam-beta1", "1"], "adam_beta1 must be a number in [0, 1), got 1.0"),
        (["train", "--output-bias", "zero"], "valid values: torch, data-logit"),
        (["train", "--output-bias", "data-logit", "--decoder", "conv"], "not --decoder conv"),
        (
            ["train", "--output-bias", "data-logit", "--likelihood", "gaussian"],
            "needs an mlp or gated-mlp decoder and the bernoulli likelihood",
        ),
        (["train", "--weight-init", "xavier"], "unknown weight_init 'xavier'; valid values"),
        (["train", "--optimizer", "sgd"], "valid values: adam, adam-normgrad"),
        (["train", "--guide", "iaf", "--guide-scale", "bounded-logvar"], "the guide here is iaf"),
        (
            ["train", "--model", "hvae", "--top-guide", "iaf", "--guide-scale", "bounded-logvar"],
            "the guide here is diag-normal + iaf; give --guide diag-normal",
        ),
        (["train", "--elbo", "renyi"], "valid elbo names: trace, meanfield, iwae"),
        (["train", "--activation", "swish"], "valid activations: softplus"),
        (["train", "--binarize", "maybe"], "valid modes: dynamic, static, threshold, none"),
        (["train", "--device", "tpu"], "valid devices: auto, cpu, cuda"),
        (["train", "--batch-size", "0"], "batch_size must be an integer >= 1"),
        (["train", "--batch-size", "two"], "invalid int value: 'two'"),
        (["train", "--epochs", "-1"], "epochs must be an integer >= 0"),
        (["train", "--latent-dim", "0"], "latent_dim must be an integer >= 1"),
        (["train", "--num-particles", "0"], "num_particles must be an integer >= 1"),
        (["train", "--hidden-dims", "0"], "hidden_dims must be a non-empty list"),
        (["train", "--lr", "-1"], "lr must be a finite number > 0"),
        (["train", "--lr", "nan"], "lr must be a finite number > 0"),
        (["train", "--clip-norm", "0"], "clip_norm must be a finite number > 0"),
        (["train", "--batch-size", "99999"], "larger than the 1257 training images"),
        (["train", "--binarize", "none"], "needs binary pixels"),
        (
            ["train", "--dataset", "mnist", "--data-dir", "/no/such/dir", "--no-download"],
            "data directory /no/such/dir does not exist",
        ),
        (["train", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["evaluate", "/no/such/run"], "run folder /no/such/run does not exist"),
        (["sample", "/no/such/run"], "run folder /no/such/run does not exist"),
        (["launch"], "invalid choice: 'launch'"),
        (["train", "--checkpoint-every", "0"], "checkpoint_every must be an integer >= 1"),
        (["train", "--checkpoint-minutes", "-1"], "checkpoint_minutes must be a finite number"),
        (["train", "--skip-nonfinite", "-2"], "skip_nonfinite must be an integer >= 0"),
        (["train", "--eval-batch-size", "0"], "eval_batch_size must be an integer >= 1"),
        (["train", "--seed", "-5"], "seed must be an integer >= 0"),
        (
            ["train", "--compile", "inductor"],
            "unknown compile 'inductor'; valid values: jit, eager",
        ),
        (["train", "--precision", "fp16"], "unknown precision 'fp16'; valid values: fp32, bf16"),
        (["train", "--dataset", "/no/such/images.npz"], "no data file at /no/such/images.npz"),
        (["train", "--resume", "/no/such/run"], "cannot resume: run folder /no/such/run"),
        (["sample", "/no/such/run", "--num", "0"], "--num must be >= 1"),
        (["evaluate", "/no/such/run", "--num-samples", "0"], "--num-samples must be >= 1"),
        (["evaluate", "/no/such/run", "--max-images", "0"], "--max-images must be >= 1"),
        (["evaluate", "/no/such/run", "--split", "dev"], "invalid choice: 'dev'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, args, message):
    if args[0] == "train" and "--resume" not in args:
        args = [*args, "--out", str(tmp_path / "run")]
    try:
        code = main(args)
    except SystemExit as exit_info:  # argparse's own usage errors exit from parse_args
        code = exit_info.code
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_fallback_from_jit_is_one_warning_line_and_the_summary_names_the_loss(tmp_path, capsys):
    args = ["train", *SMALL, "--guide", "mixture", "--out", tmp_path / "r"]
    code, out, err = run_cli(args, capsys)
    assert code == 0
    (line,) = err.strip().splitlines()
    assert line.startswith("pyro-vae: warning: --compile jit: tracing failed (RuntimeError")
    assert line.endswith("training with Pyro's eager Trace_ELBO instead")
    assert "loss eager, fp32" in out
    code, out, err = run_cli(["train", *SMALL, "--out", tmp_path / "j"], capsys)
    assert code == 0 and err == "" and "loss jit, fp32" in out


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(["train", *SMALL, "--out", blocker / "run"], capsys)
    assert code == 2 and err.startswith("pyro-vae: error: cannot write to run folder")


def test_evaluate_a_folder_without_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_cli(["train", *SMALL, "--epochs", "0", "--out", run_dir], capsys)
    (run_dir / "checkpoint.pt").unlink()
    code, _, err = run_cli(["evaluate", run_dir], capsys)
    assert code == 2 and "no checkpoint at" in err


@needs_mnist
def test_train_on_the_shared_mnist_copy(tmp_path, capsys):
    args = "train --dataset mnist --no-download --epochs 1 --hidden-dims 64 --batch-size 500"
    args = [*args.split(), "--data-dir", SHARED_DATA, "--out", tmp_path / "run", "--quiet"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "10000 test images of mnist" in out
    assert -250 < float(out.split("test ELBO: ")[1].split()[0]) < -100


def test_cuda_without_a_gpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    code, _, err = run_cli(["train", "--device", "cuda", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "no CUDA GPU is visible; use --device cpu" in err


def test_corrupt_checkpoint_through_the_cli(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_cli(["train", *SMALL, "--epochs", "0", "--out", run_dir], capsys)
    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    for command in (["evaluate", run_dir], ["sample", run_dir], ["train", "--resume", run_dir]):
        code, _, err = run_cli(command, capsys)
        assert code == 2 and "is not a readable pyro-vae checkpoint" in err, command
        assert len(err.strip().splitlines()) == 1


def test_nan_images_through_the_cli(tmp_path, capsys):
    import numpy as np

    images = np.full((4, 3, 3), 0.5)
    images[1, 1, 1] = np.nan
    np.savez(tmp_path / "d.npz", train=images, test=images[:1])
    code, _, err = run_cli(
        ["train", "--dataset", tmp_path / "d.npz", "--out", tmp_path / "r"], capsys
    )
    assert code == 2 and "train has 1 NaN or infinite values" in err


def test_train_from_a_config_file_with_flags_over_it(tmp_path, capsys):
    first = tmp_path / "first"
    code, _, _ = run_cli(["train", *SMALL, "--epochs", "1", "--out", first], capsys)
    assert code == 0
    # A run's own config.json starts the same run again; a flag beside it wins.
    second = tmp_path / "second"
    args = ["train", "--config", first / "config.json", "--seed", "5", "--quiet", "--out", second]
    code, _, _ = run_cli(args, capsys)
    assert code == 0
    one, two = (json.loads((run / "config.json").read_text()) for run in (first, second))
    assert two == {**one, "seed": 5}
    (tmp_path / "bad.json").write_text('{"latent_dim": 0}')
    code, _, err = run_cli(["train", "--config", tmp_path / "bad.json"], capsys)
    assert code == 2 and "latent_dim must be an integer >= 1, got 0" in err
    (tmp_path / "typo.json").write_text('{"latnt_dim": 4}')
    code, _, err = run_cli(["train", "--config", tmp_path / "typo.json"], capsys)
    assert code == 2 and "unknown config field(s) latnt_dim" in err


def test_m2_train_evaluate_viz_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "m2"
    flags = ["--model", "m2", "--labels", "30", *SMALL, "--out", run_dir]
    code, out, err = run_cli(["train", *flags], capsys)
    assert code == 0, err
    code, out, err = run_cli(["evaluate", run_dir, "--num-samples", "50", "--quiet"], capsys)
    assert code == 0, err
    error = float(out.split("test error of argmax q(y|x): ")[1].split("%")[0]) / 100
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["error"] == pytest.approx(error, abs=5e-5)
    assert evaluation["log_likelihood"] >= evaluation["elbo"]
    code, out, err = run_cli(["viz", run_dir], capsys)
    assert code == 0, err
    report = (run_dir / "report.html").read_text()
    assert "Analogies" in report and "Samples per class" in report
    assert (run_dir / "viz" / "analogies.png").stat().st_size > 0
    code, out, err = run_cli(["sample", run_dir, "--num", "20"], capsys)
    assert code == 0, err


def test_cvae_evaluates_log_p_x_given_y(tmp_path, capsys):
    run_dir = tmp_path / "cvae"
    code, out, err = run_cli(["train", "--model", "cvae", *SMALL, "--out", run_dir], capsys)
    assert code == 0, err
    code, out, err = run_cli(["evaluate", run_dir, "--num-samples", "20", "--quiet"], capsys)
    assert code == 0 and "log p(x | y) ≈" in out and "error of argmax" not in out
    code, out, err = run_cli(["viz", run_dir], capsys)
    assert code == 0 and (run_dir / "viz" / "class_samples.png").is_file()


def test_class_conditional_bad_input_is_one_line(tmp_path, capsys):
    import numpy as np

    unlabelled = tmp_path / "unlabelled.npz"
    images = np.zeros((20, 4, 4), dtype=np.uint8)
    np.savez(unlabelled, train=images, test=images[:4])
    cases = [
        (["--model", "m2", "--labels", "5000"], "leaves no unlabelled image"),
        (["--model", "m2", "--labels", "5"], "fewer than the 10 classes"),
        (["--model", "m2"], "needs --labels N"),
        (["--model", "m2", "--labels", "20", "--prior", "vamp"], "VampPrior"),
        (["--model", "m2", "--labels", "20", "--elbo", "iwae"], "TraceEnum_ELBO"),
        (["--model", "cvae", "--elbo", "iwae-dreg"], "does not take their labels"),
        (["--labels", "20"], "is for --model m2"),
        (["--labelled-weighting", "data"], "is for --model m2"),
        (["--model", "m2", "--labels", "20", "--labelled-weighting", "all"], "batch, data"),
        (["--model", "cvae", "--dataset", unlabelled], "has no labels"),
    ]
    for flags, message in cases:
        code, out, err = run_cli(["train", *flags, *SMALL, "--out", tmp_path / "r"], capsys)
        assert code == 2, (flags, err)
        assert message in err and len(err.strip().splitlines()) == 1, (flags, err)
        assert not (tmp_path / "r").exists()


def test_evaluate_by_ais_and_bdmc_writes_files_of_its_own(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(run_dir), "--quiet"]) == 0
    assert main(["evaluate", str(run_dir), "--num-samples", "50", "--max-images", "8",
                 "--quiet"]) == 0  # fmt: skip
    importance = (run_dir / "evaluation.json").read_text()
    common = ["--chains", "3", "--leapfrog-steps", "2", "--quiet"]
    assert main(["evaluate", str(run_dir), "--method", "ais", "--steps", "5",
                 "--max-images", "8", *common]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "AIS log p(x) ≈" in out and "5 steps × 3 chains" in out
    ais = json.loads((run_dir / "evaluation-ais.json").read_text())
    assert (ais["method"], ais["num_steps"], ais["num_chains"], ais["num_images"]) == (
        "ais",
        5,
        3,
        8,
    )
    rows = (run_dir / "evaluation-ais_per_datapoint.csv").read_text().splitlines()
    assert rows[0] == "index,label,log_likelihood,chain_standard_error,ess,acceptance"
    assert len(rows) == 9
    assert main(["evaluate", str(run_dir), "--method", "bdmc", "--steps", "2", "4",
                 "--bdmc-images", "4", "--num-samples", "20", *common]) == 0  # fmt: skip
    bdmc = json.loads((run_dir / "evaluation-bdmc.json").read_text())
    assert [row["steps"] for row in bdmc["rows"]] == [2, 4]
    assert (bdmc["num_chains"], bdmc["leapfrog_steps"]) == (3, 2)
    rows = (run_dir / "evaluation-bdmc_per_datapoint.csv").read_text().splitlines()
    assert rows[0] == "index,lower_T2,upper_T2,lower_T4,upper_T4,importance_K20"
    assert len(rows) == 5
    assert (run_dir / "evaluation.json").read_text() == importance  # the IS files stay
    # every evaluation is kept, named by its method, budget and images
    kept = sorted(p.name for p in (run_dir / "evaluations").iterdir())
    assert kept == [
        "simulated-bdmc-T2-4xC3-4images.csv", "simulated-bdmc-T2-4xC3-4images.json",
        "test-ais-T5xC3-8images.csv", "test-ais-T5xC3-8images.json",
        "test-is-K50-8images.csv", "test-is-K50-8images.json",
    ]  # fmt: skip
    out = capsys.readouterr().out
    assert "evaluations/simulated-bdmc-T2-4xC3-4images.json" in out
    assert main(["evaluate", str(run_dir), "--method", "ais", "--chains", "0", "--quiet"]) == 2
    assert "num_chains must be an integer >= 1, got 0" in capsys.readouterr().err


def test_small_bad_inputs_end_in_one_line(tmp_path, capsys):
    assert main(["train", "--seed", str(2**64), "--epochs", "0", "--out", str(tmp_path / "s")]) == 2
    assert "seed must be below 2**63" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(run), "--quiet", "--no-tensorboard"]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--out", str(tmp_path / "foo")]) == 2
    assert "names no image format" in capsys.readouterr().err
    assert main(["compare", str(run), "--plot", str(tmp_path / "nodir" / "x.png")]) == 2
    assert "could not read or write a file" in capsys.readouterr().err


def test_a_relative_npz_path_is_stored_absolute(tmp_path, monkeypatch, capsys):
    import numpy as np

    images = (np.random.default_rng(0).random((40, 4, 4)) > 0.5).astype(np.uint8) * 255
    np.savez(tmp_path / "mine.npz", train=images[:30], test=images[30:])
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "mine.npz", "--epochs", "1", "--batch-size", "9",
                 "--out", "run", "--quiet", "--no-tensorboard"]) == 0  # fmt: skip
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"] == str(tmp_path / "mine.npz")


def test_a_collapsed_posterior_is_warned_about_naming_the_remedies(tmp_path, capsys):
    assert main(["train", "--epochs", "20", "--beta", "30", "--hidden-dims", "32",
                 "--out", str(tmp_path / "r"), "--quiet", "--no-tensorboard"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "no latent unit is active at the end" in err and "--kl-warmup-epochs" in err
