"""Line breaking for the display of a derivation: a formula wider than the book's column is set
over several lines (``aligned``/``gathered``), so that no equation scrolls sideways.

MathJax 3 does not break lines by itself. :func:`break_lines` estimates how wide a formula prints
(:func:`width`, in letters: a fraction is as wide as its wider part, sub- and superscripts count
0.7) and breaks it where a reader would: between formulas set side by side, at relations, then
before the top-level + and - of a side that is still too wide. It only inserts ``&``, ``\\\\``,
``\\quad`` and an environment: the formula's own tokens are left as they are.
"""

from __future__ import annotations

import re

_ZERO = {r"\left", r"\right", r"\big", r"\Big", r"\bigg", r"\Bigg", r"\bigl", r"\bigr", r"\Bigl", r"\Bigr",
         r"\displaystyle", r"\textstyle", r"\limits", r"\nolimits"}
_WRAP = {r"\mathrm", r"\mathbf", r"\mathcal", r"\mathbb", r"\operatorname", r"\boldsymbol", r"\hat", r"\bar",
         r"\tilde", r"\overline", r"\underbrace", r"\widehat", r"\widetilde", r"\vec", r"\underset", r"\overset"}
_SPACE = {r"\qquad": 2.0, r"\quad": 1.0, r"\,": 0.2, r"\;": 0.3, r"\:": 0.25, r"\!": -0.15, r"\ ": 0.3}
_WORDS = {r"\log": 2.6, r"\exp": 2.6, r"\sin": 2.4, r"\cos": 2.6, r"\max": 3, r"\min": 3, r"\arg": 2.6,
          r"\Var": 3, r"\sum": 1.6, r"\prod": 1.6, r"\int": 1.2}
_REL = 1.8   # a relation or binary operator with its spacing


def _group(tex, i):
    """(content, end) of the {...} group starting at i, or of the single token at i."""
    if i < len(tex) and tex[i] == "{":
        depth = 0
        for j in range(i, len(tex)):
            depth += {"{": 1, "}": -1}.get(tex[j], 0) if tex[j - 1:j] != "\\" or j == i else 0
            if depth == 0:
                return tex[i + 1:j], j + 1
        return tex[i + 1:], len(tex)
    m = re.match(r"\\[A-Za-z]+|\\.|.", tex[i:], re.S)
    return (m.group(0), i + len(m.group(0))) if m else ("", i)


def width(tex: str) -> float:
    """Rough printed width of a LaTeX formula, in units of one italic letter (about 12 px in the book)."""
    w, i = 0.0, 0
    while i < len(tex):
        c = tex[i]
        if c == "\\":
            m = re.match(r"\\([A-Za-z]+|.)", tex[i:])
            cmd = m.group(0)
            i += len(cmd)
            if cmd in (r"\frac", r"\dfrac", r"\tfrac"):
                a, i = _group(tex, i)
                b, i = _group(tex, i)
                w += max(width(a), width(b)) * (0.75 if cmd == r"\tfrac" else 1) + 0.4
            elif cmd == r"\sqrt":
                a, i = _group(tex, i)
                w += width(a) + 1.0
            elif cmd in (r"\text", r"\textbf", r"\mbox"):
                a, i = _group(tex, i)
                w += 0.9 * len(a)
            elif cmd in _WRAP:
                a, i = _group(tex, i)
                if cmd in (r"\underset", r"\overset", r"\underbrace"):
                    b, i = _group(tex, i) if cmd != r"\underbrace" else ("", i)
                    w += max(width(a) * (0.7 if cmd != r"\underbrace" else 1), width(b))
                else:
                    w += width(a)
            elif cmd in (r"\begin", r"\end"):
                _, i = _group(tex, i)
            elif cmd in _ZERO:
                pass
            elif cmd in _SPACE:
                w += _SPACE[cmd]
            elif cmd in _WORDS:
                w += _WORDS[cmd]
            elif cmd in (r"\{", r"\}", r"\|"):
                w += 0.6
            elif cmd in (r"\mid", r"\sim", r"\approx", r"\propto", r"\le", r"\leq", r"\ge", r"\geq", r"\iff",
                         r"\implies", r"\Longrightarrow", r"\to", r"\cdot", r"\times", r"\pm", r"\neq", r"\equiv"):
                w += _REL
            else:
                w += 1.0
        elif c in "_^":
            a, i = _group(tex, i + 1)
            w += 0.7 * width(a)
        elif c in "{}":
            i += 1
        elif c in "=+-<>":
            w += _REL
            i += 1
        elif c in " \n\t&":
            i += 1
        elif c in "()[]|,.;:!'":
            w += 0.5
            i += 1
        else:
            w += 1.0
            i += 1
    return w


_REL_RE = r"=|\\(?:approx|propto|leq?|geq?|iff|implies|Longrightarrow|Rightarrow)(?![A-Za-z])"


def _split_top(tex: str, pattern: str) -> list[str]:
    """Split at the matches of ``pattern`` outside every brace and bracket; the separators are kept
    as their own items (odd indices)."""
    out, depth, start, i = [], 0, 0, 0
    rx = re.compile(pattern)
    while i < len(tex):
        c = tex[i]
        if c == "\\" and i + 1 < len(tex) and tex[i + 1] in "{}|,;:! ":
            if tex[i + 1] == "{": depth += 1
            if tex[i + 1] == "}": depth -= 1
            i += 2
            continue
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
        elif depth == 0:
            m = rx.match(tex, i)
            if m and m.end() > i:
                out += [tex[start:i], m.group(0)]
                start = i = m.end()
                continue
        i += 1
    out.append(tex[start:])
    return out


def _terms(tex: str) -> list[str]:
    """``tex`` cut before each top-level + or - that follows a term (not a leading sign)."""
    parts = _split_top(tex, r"\+|-(?!\d*\})")
    terms = [parts[0]]
    for sep, piece in zip(parts[1::2], parts[2::2]):
        if terms[-1].strip() == "" or terms[-1].rstrip().endswith(("(", "[", "{", ",")):
            terms[-1] += sep + piece
        else:
            terms.append(sep + piece)
    return terms


def _pack(pieces: list[str], limit: float, first_room: float) -> list[str]:
    lines, room = [""], first_room
    for p in pieces:
        if lines[-1].strip() and width(lines[-1] + p) > room:
            lines.append(p)
            room = limit
        else:
            lines[-1] += p
    return lines


_FORMULA_SEP = r",?\s*\\qquad(?![A-Za-z])|,?\s*\\quad(?![A-Za-z])|,\\ "


#: The column of a 1280 px page holds about 56 letters of display math; 52 leaves a margin.
COLUMN_LETTERS = 52.0


def break_lines(tex: str, limit: float = COLUMN_LETTERS) -> str:
    """``tex`` over several lines where it is wider than ``limit`` letters (about 640 px in the book).

    Formulas set side by side (``\\qquad``, ``\\quad``, ``,\\ ``) go one per line (``gathered``); a
    formula still too wide breaks at its relations (``=``, ``\\approx``, ``\\propto``, ``\\implies``,
    ...) and, where one side is still too wide, before the top-level + and - of that side
    (``aligned``). A formula that already holds an environment, ``&`` or ``\\\\`` is left as it is."""
    tex = tex.strip()
    if width(tex) <= limit or "\\begin" in tex or "&" in tex or "\\\\" in tex:
        return tex
    formulas = [f.strip() for f in _split_top(tex, _FORMULA_SEP)[::2] if f.strip()]
    if len(formulas) > 1:
        return "\\begin{gathered}" + " \\\\\n".join(break_lines(f, limit) for f in formulas) + "\\end{gathered}"
    parts = _split_top(tex, _REL_RE)
    lhs, rest = parts[0].strip(), [(r, s.strip()) for r, s in zip(parts[1::2], parts[2::2])]
    rows = []
    if rest and width(lhs) <= 0.45 * limit:  # aligned on the relations
        room = limit - width(lhs) - 2
        for k, (rel, side) in enumerate(rest):
            lines = _pack(_terms(side), room, room)
            rows.append(f"{lhs if k == 0 else ''} &{rel} {lines[0].strip()}")
            rows += [f"&\\quad {line.strip()}" for line in lines[1:]]
    if len(rows) < 2 or max(width(r) for r in rows) > limit + 2:  # flush left, then indented
        lines = _pack(_terms(lhs), limit, limit)
        rows = ["& " + lines[0].strip()] + [f"&\\quad {line.strip()}" for line in lines[1:]]
        for rel, side in rest:
            lines = _pack(_terms(side), limit - 3, limit - 3)
            rows.append(f"&\\quad {rel} {lines[0].strip()}")
            rows += [f"&\\qquad {line.strip()}" for line in lines[1:]]
    if len(rows) == 1:
        return tex
    return "\\begin{aligned}" + " \\\\\n".join(rows) + "\\end{aligned}"
