"""The documentation site builds with ``mkdocs build --strict``: a broken link, a missing
page, a reference mkdocstrings cannot resolve or a docstring that does not render fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_site_builds_strictly_with_generated_pages(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    cli = (site / "cli" / "index.html").read_text()
    for command in ("train", "evaluate", "sample", "viz", "compare"):
        assert f"pyro-vae {command}" in cli  # generated from the parsers
    assert "--kl-warmup-epochs" in cli and "--method" in cli
    api = (site / "api" / "index.html").read_text()
    assert "importance_log_likelihood" in api and "AIS estimate of log p(x)" in api
    examples = (site / "examples" / "index.html").read_text()
    assert "tutorial_vae:build" in examples and "LaplacePrior" in examples  # the scripts shown
    assert not (site / "hooks.py").exists()


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## In Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    assert "epochs=20" in code and "num_samples=1000" in code  # made small below
    small = code.replace("epochs=20", "epochs=1").replace("num_samples=1000", "num_samples=50")
    exec(compile(small, "README.md", "exec"), {})
    log_likelihood, share = map(float, capsys.readouterr().out.split()[-2:])
    assert log_likelihood < 0 and 0 <= share <= 1
    assert (tmp_path / "runs" / "demo" / "checkpoint.pt").is_file()


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for page in ROOT.glob("docs/*.md"):  # every page is linked from the README or the index
        linked = f"docs/{page.name}" in readme or page.name in (ROOT / "docs/index.md").read_text()
        assert linked or page.name == "index.md", page.name
