"""Render the built book in headless Chromium, as a reader sees it, and report what overflows.

    jupyter-book build . -W --keep-going
    python scripts/check_pages.py --chromium /usr/bin/chromium --shots shots/

For every page of ``_build/html`` it takes a screenshot at 1280 px (one PNG per page in ``--shots``),
checks that MathJax typeset the page (no raw ``$$`` or ``\\(`` left, and at least one ``mjx-container``
where the source has mathematics), and lists every code output, equation or table whose content is
wider than its box (``scrollWidth > clientWidth``), which a reader would have to scroll sideways.
Needs ``pip install playwright`` and a Chromium; it is a maintainer's tool, not part of the tests.
Exits 1 when a page has an overflowing block or untypeset mathematics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The blocks a reader reads: code outputs, code cells, display equations, tables.
BLOCKS = "div.cell_output pre, div.highlight pre, div.math-wrapper, mjx-container[display='true'], table"

OVERFLOW_JS = """(sel) => Array.from(document.querySelectorAll(sel))
    .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
    .map(e => ({tag: e.tagName, cls: (e.closest('.cell') || {className: ''}).className,
                text: (e.textContent || '').slice(0, 70), sw: e.scrollWidth, cw: e.clientWidth}))"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--html", default="_build/html", help="the built book (default: _build/html)")
    parser.add_argument("--chromium", default=None, help="path of a Chromium executable (default: Playwright's)")
    parser.add_argument("--shots", default="shots", help="folder for the screenshots (default: shots)")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in px (default: 1280)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    html = Path(args.html)
    pages = sorted(p for p in html.rglob("*.html") if "_static" not in p.parts and p.name not in ("search.html", "genindex.html"))
    if not pages:
        parser.error(f"--html: no pages under {html}; build the book first (jupyter-book build .)")
    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    problems = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium)
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        for path in pages:
            page.goto(path.resolve().as_uri(), wait_until="load")
            try:  # MathJax typesets after the load event
                page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=10000)
                page.evaluate("MathJax.startup.promise")
            except Exception:  # a page without mathematics may not start MathJax
                pass
            page.wait_for_timeout(300)
            name = str(path.relative_to(html)).replace("/", "_").removesuffix(".html")
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            wide = page.evaluate(OVERFLOW_JS, BLOCKS)
            typeset = page.evaluate("document.querySelectorAll('mjx-container').length")
            raw = page.evaluate("(document.querySelector('main') || document.body).innerText.includes('$$')")
            status = "ok"
            if wide or raw:
                problems += 1
                status = f"{len(wide)} wide block(s)" + (", raw $$ left" if raw else "")
            print(f"{name:40s} {typeset:4d} equations typeset  {status}")
            for w in wide:
                print(f"    {w['tag']:5s} {w['sw']:5d} > {w['cw']:5d}  {w['cls'][:30]:30s} {w['text']!r}")
        browser.close()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
