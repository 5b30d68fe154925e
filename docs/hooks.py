"""MkDocs hooks: pages that are generated, never written twice.

- ``{{ cli_reference }}``: every ``pyro-vae`` command's help, read from the argparse parsers
  (``pyro_vae.cli.build_parser``) when the site is built.
- ``{{ include FILE }}``: a Markdown file of the repository (RESULTS.md, BENCHMARKS.md), its
  first heading dropped and its links to repository files shown as paths (the site holds
  the pages, not the files).
- ``{{ include_code FILE }}``: a file's text, inside the code fence around the placeholder.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"\{\{ (cli_reference|include|include_code)(?: ([\w./-]+))? \}\}")
# [label](target), the label holding at most one level of brackets ("E[x | z]")
LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\((?!https?://|#)([^)\s]+)\)")


def cli_reference() -> str:
    from pyro_vae.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    blocks = ["## `pyro-vae`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, command in commands.choices.items():
        blocks += [f"## `pyro-vae {name}`", "", "```text", command.format_help().rstrip(),
                   "```", ""]  # fmt: skip
    return "\n".join(blocks)


def repository_markdown(name: str) -> str:
    text = (ROOT / name).read_text()
    text = re.sub(r"\A# [^\n]*\n", "", text)  # the page has its own title
    text = re.sub(r"<!-- [^>]* -->\n?", "", text)

    def as_path(match: re.Match) -> str:
        image, label, target = match.groups()
        return f"{label} (figure: `{target}`)" if image else f"{label} (`{target}`)"

    return LINK.sub(as_path, text)


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(match: re.Match) -> str:
        kind, name = match.groups()
        if kind == "cli_reference":
            return cli_reference()
        if kind == "include":
            return repository_markdown(name)
        return (ROOT / name).read_text().rstrip()

    return PLACEHOLDER.sub(replace, markdown)
