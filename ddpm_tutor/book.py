"""What the book's pages need beyond the package: ``glue``, which works with and without MyST-NB.

The chapters quote numbers from their own cells with MyST-NB's ``glue`` (``{glue:text}`name:.1f```
in the prose), so the text cannot drift from the outputs when a chapter is re-executed. MyST-NB
comes with Jupyter Book; on Colab, where a reader runs a chapter with only the package installed,
:func:`glue` falls back to showing the value (or nothing, with ``display=False``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["glue"]


def glue(name: str, variable: Any, display: bool = True) -> None:
    """MyST-NB's ``glue(name, variable, display)`` where MyST-NB is installed; else show ``variable``
    when ``display`` is true (the page's text is not built outside Jupyter Book).

    A NumPy or 0-dim torch scalar is glued as the Python number it holds: its ``repr``
    (``np.float64(2.2)``) is what MyST-NB stores, and a ``{glue:text}`` format cannot read it back.
    """
    if hasattr(variable, "item") and getattr(variable, "ndim", None) == 0:
        variable = variable.item()
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show

            show(variable)
        return
    myst_glue(name, variable, display=display)
