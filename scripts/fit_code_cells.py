"""Reformat the code cells of chapter notebooks whose lines run past the page's column.

    python scripts/fit_code_cells.py book/10_measuring_samples.ipynb [more notebooks]

Only cells with a line longer than ``--width`` characters (80, as ``tests/test_book.py`` checks)
are touched, and in them only the long lines: a trailing comment on a long line moves (wrapped) onto
its own line above the statement, then Black reformats the statements that are still too long
(``line_ranges``), leaving the rest of the cell as it was written. Cells with IPython magics are
skipped. What Black cannot shorten (a long string, a long docstring line) is listed for a hand edit.
Outputs are not touched: re-execute the notebook afterwards. Needs ``pip install black``; it is a
maintainer's tool, not part of the tests.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import textwrap
import tokenize
from pathlib import Path


def _wrap_comment(indent: str, text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width - len(indent) - 2, initial_indent=indent + "# ", subsequent_indent=indent + "# ")


def move_long_comments(source: str, width: int) -> str:
    """Put the trailing comment of each line longer than ``width`` on its own line(s) above it."""
    comments = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                comments[token.start[0] - 1] = token.start[1]
    except (tokenize.TokenError, IndentationError):
        return source
    out = []
    for number, line in enumerate(source.split("\n")):
        column = comments.get(number)
        if len(line) <= width or column is None:
            out.append(line)
            continue
        code, text = line[:column].rstrip(), line[column:].lstrip("#").strip()
        indent = line[: len(line) - len(line.lstrip())]
        if code.strip() and code.endswith(("(", "[", "{", ",", "\\")):
            out.append(line)  # inside an open bracket: left to Black
            continue
        out += _wrap_comment(indent, text, width)
        if code.strip():
            out.append(code)
    return "\n".join(out)


def fit_cell(source: str, width: int, black) -> str:
    source = move_long_comments(source, width)
    long = [n + 1 for n, line in enumerate(source.split("\n")) if len(line) > width]
    if long:
        mode = black.Mode(line_length=width)
        source = black.format_str(source + "\n", mode=mode, lines=[(n, n) for n in long]).rstrip("\n")
    return source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--width", type=int, default=80, help="the longest line allowed (default: 80)")
    args = parser.parse_args(argv)
    try:
        import black
    except ImportError:
        parser.error("needs Black: pip install black")
    left = 0
    for path in args.notebooks:
        notebook = json.loads(path.read_text())
        changed = 0
        for number, cell in enumerate(notebook["cells"]):
            source = "".join(cell["source"])
            if cell["cell_type"] != "code" or all(len(line) <= args.width for line in source.split("\n")):
                continue
            if any(line.lstrip().startswith(("%", "!")) for line in source.split("\n")):
                print(f"{path}: cell {number} holds IPython magics, skipped")
                continue
            new = fit_cell(source, args.width, black)
            lines = new.split("\n")
            cell["source"] = [line + "\n" for line in lines[:-1]] + [lines[-1]]
            changed += new != source
            for line in lines:
                if len(line) > args.width:
                    left += 1
                    print(f"{path}: cell {number}, still {len(line)} characters: {line.strip()[:60]}")
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        print(f"{path}: {changed} cell(s) reformatted")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
