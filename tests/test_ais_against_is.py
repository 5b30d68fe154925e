"""scripts/ais_against_is.py: the IS-against-AIS section from kept evaluations, at tiny size."""

from __future__ import annotations

import json
import sys

import pytest

from pyro_vae.cli import main
from tests.conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("ais_against_is")


def test_the_section_is_written_from_evaluations_it_keeps_and_reuses(script, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(run), "--quiet"]) == 0
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nthe table\n")
    argv = ["ais_against_is.py", "--run", f"X={run}", "--images", "8", "--sweep-images", "4",
            "--sweep-steps", "2", "4", "--steps", "3", "--chains", "2", "--leapfrog-steps", "2",
            "--num-samples", "20", "--bdmc-row", "X", "--bdmc-images", "4", "--bdmc-steps", "2",
            "3", "--out", str(tmp_path / "out"), "--results", str(results)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    kept = sorted(p.name for p in (run / "evaluations").glob("*.json"))
    assert kept == ["simulated-bdmc-T2-3xC2-4images.json", "test-ais-T2xC2-4images.json",
                    "test-ais-T3xC2-8images.json", "test-ais-T4xC2-4images.json",
                    "test-is-K20-8images.json"]  # fmt: skip
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    row = summary["rows"][0]
    assert [s["steps"] for s in row["sweep"]] == [2, 4] and row["images"] == 8
    split = row["split"]
    assert split["khat <= 0.7"]["images"] + split["khat > 0.7"]["images"] == 8
    for t in summary["bdmc"]["table"]:
        assert t["upper"] - t["lower"] == pytest.approx(t["gap"][0])
    text = results.read_text()
    assert text.startswith("# Results\n\nthe table\n")
    assert "<!-- IS against AIS: begin -->\n## IS against AIS" in text
    assert "| X | 3 |" not in text and "| X | 1 |" in text  # the row's epochs, then the sweep
    assert (tmp_path / "out" / "ais-against-is.png").is_file()
    # A second run reuses every kept evaluation: nothing is estimated again
    stamps = {p: p.stat().st_mtime_ns for p in (run / "evaluations").iterdir()}
    script.main()
    assert {p: p.stat().st_mtime_ns for p in (run / "evaluations").iterdir()} == stamps
    assert results.read_text().count("## IS against AIS") == 1
    # --only-kept: a row swept over other steps shows the steps it has
    at = argv.index("--sweep-steps")
    monkeypatch.setattr(sys, "argv", [*argv[: at + 1], "2", "8", *argv[at + 3 :], "--only-kept"])
    script.main()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["steps"] for s in summary["rows"][0]["sweep"]] == [2]
