"""The display of a derivation fits the book's column: ``break_lines`` sets a wide formula over
several lines, keeps every token of it, and leaves a narrow one alone."""

from __future__ import annotations

import re

import pytest

import ddpm_tutor.derivations as D
from ddpm_tutor.derivations._layout import COLUMN_LETTERS, break_lines, width

_LAYOUT = re.compile(r"\\begin\{(?:aligned|gathered)\}|\\end\{(?:aligned|gathered)\}|\\\\|&|\\q?quad(?![A-Za-z])|,|\\ |\s")


def _rows(tex: str) -> list[str]:
    inner = re.sub(r"\\(?:begin|end)\{(?:aligned|gathered)\}", "", tex)
    return inner.split("\\\\")


@pytest.fixture(scope="module")
def formulas():
    out = []
    for derive in D.PROOFS:
        proof = derive()
        out += [(derive.__name__, proof.statement_latex)]
        out += [(derive.__name__, step.latex) for step in proof.steps if "\\begin" not in step.latex]
    return out


def test_every_displayed_row_fits_the_column(formulas):
    wide = []
    for name, tex in formulas:
        for row in _rows(break_lines(tex)):
            if width(row) > COLUMN_LETTERS + 2:
                wide.append(f"{name}: {width(row):.0f} letters: {row[:80]}")
    assert not wide, "\n".join(wide)
    assert sum(break_lines(tex) != tex for _, tex in formulas) >= 10, "the wide formulas were broken"


def test_breaking_keeps_every_token(formulas):
    for name, tex in formulas:
        assert _LAYOUT.sub("", break_lines(tex)) == _LAYOUT.sub("", tex), name


def test_a_narrow_formula_is_left_alone_and_a_long_sum_breaks_at_its_relation_and_terms():
    assert break_lines(r"x_t = \sqrt{\bar{\alpha}_t}\,x_0") == r"x_t = \sqrt{\bar{\alpha}_t}\,x_0"
    long = "L = " + " + ".join(rf"\log p_\theta(x_{{{k}}} \mid x_{{{k + 1}}})" for k in range(8))
    out = break_lines(long)
    assert out.startswith(r"\begin{aligned}L &= ") and out.endswith(r"\end{aligned}")
    assert len(_rows(out)) >= 3 and all(width(r) <= COLUMN_LETTERS + 2 for r in _rows(out))
    assert [r.strip().startswith(r"&\quad +") for r in _rows(out)[1:]] == [True] * (len(_rows(out)) - 1)
    one = r"a = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon}{\sqrt{\bar\alpha_t}}"
    out = break_lines(r",\qquad ".join([one] * 5))
    assert out == r"\begin{gathered}" + " \\\\\n".join([one] * 5) + r"\end{gathered}"
