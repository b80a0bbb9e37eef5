"""Committed records of measured runs: what the book's appendix and the fast-sampling and guidance
chapters plot.

Each record is a JSON file beside this module, written by the script or command named inside it, so a
figure in the book is built from numbers a reader can reproduce rather than typed into the page.

    >>> import ddpm_tutor as dt
    >>> runs = dt.records.load("quality_runs")["runs"]
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["FOLDER", "available", "load", "binomial_se"]

#: The folder the records live in (shipped with the package).
FOLDER = Path(__file__).parent


def available() -> list[str]:
    """The names :func:`load` accepts, sorted."""
    return sorted(p.stem for p in FOLDER.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    """The record ``name`` (a file ``NAME.json`` beside this module), parsed."""
    path = FOLDER / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no record named {name!r}; the records are: {', '.join(available()) or 'none'}")
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def binomial_se(fraction: float, n: int) -> float:
    """Standard error sqrt(p (1 - p) / n) of a fraction ``p`` measured on ``n`` independent samples."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    return math.sqrt(fraction * (1.0 - fraction) / n)
