"""What ``pip install pyro-vae`` puts in site-packages: one top-level package, pyro_vae."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_models_and_guides_inside_pyro_vae(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
        cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("pyro_vae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"pyro_vae"}
    for module in ("pyro_vae/models/hvae_skip.py", "pyro_vae/guides/hierarchical_skip.py"):
        assert module in names
    assert not any(name.startswith(("models/", "guides/", "tests/", "scripts/")) for name in names)
