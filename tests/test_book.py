"""The book's pages as files: every chapter in the table of contents, its Colab cell pointing at the one
repository URL (``_config.yml``), installing the package and nothing else, and its launch buttons on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


def test_the_repository_url_is_configured_once():
    url = CONFIG["repository"]["url"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url), url
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["html"]["use_repository_button"] is True


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    listed = set(re.findall(r"file:\s*(\S+)", toc))
    assert {f"book/{p.stem}" for p in CHAPTERS} <= listed


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_colab_cell_installs_the_package_from_the_configured_repository(path):
    first = json.loads(path.read_text())["cells"][0]
    source = "".join(first["source"])
    assert first["cell_type"] == "code" and 'if "google.colab" in sys.modules:' in source, "first cell: the Colab install"
    assert re.findall(r'url = "([^"]+)"', source) == [CONFIG["repository"]["url"]]
    installs = re.findall(r'%pip install --quiet "([^"]+)"', source)
    assert installs == ["ddpm-tutor @ git+{url}"], installs  # the package alone: no Sphinx on Colab


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_glue_through_the_package(path):
    """``myst_nb`` is not installed on Colab: the chapters glue through ``ddpm_tutor.book.glue``."""
    sources = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert not any("from myst_nb import" in s for s in sources)


def test_glue_without_myst_nb_shows_the_value(monkeypatch, capsys):
    import builtins

    from ddpm_tutor.book import glue

    real_import = builtins.__import__

    def no_myst_nb(name, *args, **kwargs):
        if name.startswith("myst_nb"):
            raise ImportError("no myst_nb here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_myst_nb)
    glue("hidden", 1.25, display=False)
    assert capsys.readouterr().out == ""
    glue("shown", 1.25)
    assert capsys.readouterr().out.strip() == "1.25"


def test_glue_stores_numpy_and_torch_scalars_as_numbers(monkeypatch):
    import numpy as np
    import torch

    import ddpm_tutor.book as book
    import myst_nb

    seen = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: seen.append(value))
    for value in (np.float64(2.5), torch.tensor(2.5), np.int64(3)):
        book.glue("x", value, display=False)
    assert seen == [2.5, 2.5, 3] and [type(v) for v in seen] == [float, float, int]


#: The widest line a page shows without a sideways scroll: the text column of a 1280 px window
#: holds 80 characters of code (the book's stylesheet, ``_static/code-width.css``, sizes the
#: code font for that), so a longer code line or output line is clipped behind a scroll bar.
COLUMN_CHARS = 80


def _text_outputs(cell):
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            yield output["text"]
        elif output["output_type"] in ("execute_result", "display_data"):
            yield output["data"].get("text/plain", "")
        elif output["output_type"] == "error":
            yield output["traceback"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_code_or_output_line_is_wider_than_the_column(path):
    """Every code line and every text output line (stream, text/plain, traceback) of a chapter fits
    in COLUMN_CHARS characters, so nothing on its page scrolls sideways at 1280 px."""
    wide = []
    for number, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "code":
            continue
        texts = [("source", cell["source"])] + [("output", t) for t in _text_outputs(cell)]
        for kind, text in texts:
            text = "".join(text) if isinstance(text, list) else text
            if kind == "output":
                text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # a traceback's colours take no room
            wide += [f"cell {number} {kind}: {line}" for line in text.splitlines() if len(line) > COLUMN_CHARS]
    assert not wide, f"{len(wide)} line(s) wider than {COLUMN_CHARS} characters:\n" + "\n".join(wide)
