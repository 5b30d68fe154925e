"""A self-contained HTML report of a run: readable in a browser offline, no file beside it.

Images are embedded as base64 ``data:`` URIs, so the page references no other file.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from pyro_vae.checkpoint import write_text_atomically
from pyro_vae.run import Run
from pyro_vae.run_folder import RunFolder

REPORT_NAME = "report.html"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 2px 10px; text-align: left; }
tr:nth-child(even) { background: #f4f4f4; } figure { margin: 1em 0; }
figcaption { font-size: 0.9em; color: #555; } img { max-width: 100%; image-rendering: pixelated; }
.warning { color: #a00; font-weight: bold; }
"""


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(rows: dict) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{cells}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"  # 1e-08 and 0.0005 as they are, not 0.0000
    if value is None:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def write_report(run: Run, images: dict[str, Path], latent: dict | None = None) -> Path:
    """``report.html`` in the run folder: config, curves, evaluation, and ``images``."""
    run_dir = Path(run.run_dir)
    parts = [f"<h1>pyro-vae run: {html.escape(run_dir.name)}</h1>", "<h2>Configuration</h2>"]
    used = run.config.to_dict()
    used["binarize"] = run.data.binarize  # None in the config: the likelihood's default
    parts.append(_table(used))
    parts.append("<h2>Training</h2>")
    if run.history:
        last = run.history[-1]
        parts.append(_table({k: v for k, v in last.items() if v is not None}))
    if (run_dir / "curves.png").exists():
        parts.append(_image(run_dir / "curves.png", "ELBO per epoch (nats per image)"))
    evaluation = RunFolder(run_dir).evaluation_file
    if evaluation.exists():
        parts.append("<h2>Evaluation</h2>")
        values = json.loads(evaluation.read_text())
        warning = values.pop("warning", None)
        parts.append(_table(values))
        if warning:
            parts.append(f'<p class="warning">{html.escape(warning)}</p>')
        if (run_dir / "khat.png").exists():
            parts.append(_image(run_dir / "khat.png", "PSIS k̂ per test image"))
    else:
        parts.append("<h2>Evaluation</h2><p>Not evaluated yet: run pyro-vae evaluate.</p>")
    parts.append("<h2>Latent space</h2>")
    if latent:
        parts.append(
            f"<p>{latent['active_units']} of {latent['latent_dim']} latent dimensions are active "
            "(Cov<sub>x</sub>(E<sub>q</sub>[z<sub>d</sub>]) &gt; "
            f"{latent['active_unit_threshold']}); dimensions by average KL: "
            f"{latent['dimensions_by_kl'][:10]}.</p>"
        )
    parts += [_image(path, title) for title, path in images.items()]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>pyro-vae: {html.escape(run_dir.name)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )
    out = run_dir / REPORT_NAME
    write_text_atomically(out, page)
    return out
