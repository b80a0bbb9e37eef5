"""The machinery every derivation shares: the :class:`Proof` record, the identity checker,
the paper's symbols and the log-density of a Gaussian.

A derivation is a function that builds SymPy expressions and checks each claimed equality
with :func:`check_identity`. Each checked claim becomes one displayed step. A claim that
fails raises :class:`ProofError`; with ``strict=False`` the derivation instead returns a
:class:`Proof` whose ``holds`` is ``False``, so a notebook can show how a wrong formula fails.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

import mpmath
import sympy as sp
from sympy.core.function import AppliedUndef

from ._layout import break_lines

__all__ = [
    "Proof",
    "ProofError",
    "Step",
    "check_identity",
    "log_normal",
    "latex",
    "sym",
    "SCHEDULE_RELATIONS",
    "split_sums",
]


# ----------------------------------------------------------------------------------------
# The paper's symbols (Ho et al. 2020 count t = 1..T). Plain ASCII names for the terminal,
# typeset names for the book (see ``_LATEX_NAMES``).
# ----------------------------------------------------------------------------------------
class _Symbols:
    """Namespace of the SymPy symbols the derivations use (paper indexing, t = 1..T).

    Schedule quantities are ``positive=True`` (they are variances and products of numbers
    in (0, 1)); data and noise are ``real=True``.
    """

    def __init__(self) -> None:
        P = dict(positive=True)
        R = dict(real=True)
        self.beta_t = sp.Symbol("beta_t", **P)  # beta_t, variance of step t
        self.alpha_t = sp.Symbol("alpha_t", **P)  # alpha_t = 1 - beta_t
        self.alpha_tm1 = sp.Symbol("alpha_tm1", **P)  # alpha_{t-1}
        self.alpha_bar_t = sp.Symbol("alpha_bar_t", **P)  # alpha_bar_t = prod_{s<=t} alpha_s
        self.alpha_bar_tm1 = sp.Symbol("alpha_bar_tm1", **P)  # alpha_bar_{t-1}
        self.sigma2_t = sp.Symbol("sigma2_t", **P)  # sigma_t^2, fixed variance of p_theta
        self.x0 = sp.Symbol("x_0", **R)
        self.xt = sp.Symbol("x_t", **R)
        self.x_tm1 = sp.Symbol("x_tm1", **R)  # x_{t-1}
        self.x_tm2 = sp.Symbol("x_tm2", **R)  # x_{t-2}
        self.eps = sp.Symbol("eps", **R)  # epsilon ~ N(0, I) of the closed form
        self.eps_theta = sp.Symbol("eps_theta", **R)  # the network's prediction of eps
        self.eps_1 = sp.Symbol("eps_1", **R)  # noise of step t (forward composition)
        self.eps_2 = sp.Symbol("eps_2", **R)  # noise of step t-1
        self.z = sp.Symbol("z", **R)  # a standard normal variable
        self.s = sp.Symbol("s", **R)  # argument of a moment generating function
        self.x = sp.Symbol("x", **R)  # integration variable
        self.mu = sp.Symbol("mu", **R)
        self.sigma = sp.Symbol("sigma", **P)
        self.mu_1 = sp.Symbol("mu_1", **R)
        self.mu_2 = sp.Symbol("mu_2", **R)
        self.sigma_1 = sp.Symbol("sigma_1", **P)
        self.sigma_2 = sp.Symbol("sigma_2", **P)

    def __repr__(self) -> str:
        return "sym(" + ", ".join(sorted(vars(self))) + ")"


sym = _Symbols()

#: The schedule relations of Ho et al. 2020 (sec. 2): beta_t = 1 - alpha_t and
#: alpha_bar_t = alpha_t * alpha_bar_{t-1}. :func:`check_identity` substitutes them so that
#: an identity is checked in the independent quantities alpha_t and alpha_bar_{t-1}.
SCHEDULE_RELATIONS: dict[sp.Symbol, sp.Expr] = {
    sym.beta_t: 1 - sym.alpha_t,
    sym.alpha_bar_t: sym.alpha_t * sym.alpha_bar_tm1,
}

_LATEX_NAMES = {
    sym.beta_t: r"\beta_t",
    sym.alpha_t: r"\alpha_t",
    sym.alpha_tm1: r"\alpha_{t-1}",
    sym.alpha_bar_t: r"\bar{\alpha}_t",
    sym.alpha_bar_tm1: r"\bar{\alpha}_{t-1}",
    sym.sigma2_t: r"\sigma_t^2",
    sym.x0: r"x_0",
    sym.xt: r"x_t",
    sym.x_tm1: r"x_{t-1}",
    sym.x_tm2: r"x_{t-2}",
    sym.eps: r"\varepsilon",
    sym.eps_theta: r"\varepsilon_\theta",
    sym.eps_1: r"\varepsilon_1",
    sym.eps_2: r"\varepsilon_2",
    sym.sigma_1: r"\sigma_1",
    sym.sigma_2: r"\sigma_2",
    sym.mu_1: r"\mu_1",
    sym.mu_2: r"\mu_2",
}


def latex(expr, names: Mapping | None = None) -> str:
    """LaTeX of a SymPy expression with the paper's typeset symbol names (plus ``names``)."""
    return sp.latex(expr, symbol_names={**_LATEX_NAMES, **(names or {})})


def log_normal(x, mean, var):
    """log N(x; mean, var) of a 1-D Gaussian, as a SymPy expression.

    ``-(x - mean)^2 / (2 var) - log(2 pi var) / 2``; a diagonal d-dimensional Gaussian is
    the sum of d such terms.
    """
    x, mean, var = sp.sympify(x), sp.sympify(mean), sp.sympify(var)
    return -((x - mean) ** 2) / (2 * var) - sp.log(2 * sp.pi * var) / 2


def split_sums(expr):
    """Rewrite every ``Sum(f, (i, a, b))`` as a sum of ``c * Sum(g, (i, a, b))``, one per monomial of ``f``.

    ``c`` is the factor of the monomial free of the summation index (pulled out, by linearity),
    and each ``Sum(g, ...)`` is evaluated where SymPy can (``Sum(1, (i, 1, d))`` becomes ``d``).
    Two sums of the same monomials then cancel term by term. Linearity of a finite sum is
    all this uses.
    """

    def split(s: sp.Sum) -> sp.Expr:
        (index, *_), = s.limits
        out = []
        for term in sp.Add.make_args(sp.expand(s.function)):
            coef, dep = term.as_independent(index, as_Add=False)
            out.append(coef * sp.Sum(dep, *s.limits).doit())
        return sp.Add(*out)

    return sp.sympify(expr).replace(lambda e: isinstance(e, sp.Sum), split)


# ----------------------------------------------------------------------------------------
# The identity checker
# ----------------------------------------------------------------------------------------
def _as_list(value) -> list:
    if isinstance(value, (sp.MatrixBase,)):
        return list(value)
    if isinstance(value, (list, tuple, sp.Tuple)):
        return list(value)
    return [value]


def _numerically_differs(left: sp.Expr, right: sp.Expr, rng: random.Random, points: int = 3) -> bool:
    """True when ``left - right`` is clearly non-zero at a random point of the symbols' domain.

    Positive symbols are drawn from (0.05, 0.95), so that sqrt(1 - alpha_bar) and friends
    stay real; other symbols from (-1.5, 1.5). Evaluated with mpmath at 30 digits. Only used
    to reject early: a True answer from :func:`check_identity` always needs a symbolic zero.
    """
    if any(e.has(AppliedUndef, sp.Sum, sp.Integral, sp.Indexed) for e in (left, right)):
        return False
    free = sorted(left.free_symbols | right.free_symbols, key=str)
    try:
        f = sp.lambdify(free, (left, right), modules="mpmath")
    except Exception:  # noqa: BLE001 - anything lambdify cannot print is simply not pre-checked
        return False
    with mpmath.workdps(30):
        for _ in range(points):
            values = [mpmath.mpf(rng.uniform(0.05, 0.95) if s.is_positive else rng.uniform(-1.5, 1.5)) for s in free]
            try:
                lv, rv = (complex(v) for v in f(*values))
            except (TypeError, ValueError, ZeroDivisionError, OverflowError):
                continue
            if lv != lv or rv != rv:  # NaN: the point left the domain
                continue
            if abs(lv - rv) > 1e-12 * max(1.0, abs(lv), abs(rv)):
                return True
    return False


def check_identity(lhs, rhs, relations: Mapping | None = None, *, numeric_check: bool = True) -> bool:
    """Decide whether ``lhs == rhs`` holds as an identity of SymPy expressions.

    Args:
        lhs, rhs: SymPy expressions (or equally long sequences/matrices of them, compared
            entry by entry). Python numbers are accepted.
        relations: substitutions applied to both sides before checking, i.e. the assumptions
            under which the identity is claimed, e.g. :data:`SCHEDULE_RELATIONS`
            (beta_t = 1 - alpha_t, alpha_bar_t = alpha_t alpha_bar_{t-1}).
        numeric_check: first evaluate the difference at three random points of the symbols'
            domain and return False at once if it is clearly non-zero (fast rejection).

    Returns:
        True only if ``lhs - rhs`` is reduced to exactly zero by one of, in order:
        ``expand``; ``together`` + ``cancel``; ``expand_log``/``powdenest`` with
        ``force=True`` + ``cancel`` (valid because every logarithm and root in these
        derivations is of a positive quantity: a variance or a product of alphas); and
        ``simplify``. False otherwise (a False may mean "not proved", never "proved wrong";
        the numeric pre-check is what makes a False on a wrong variant fast).
    """
    if relations is not None and not isinstance(relations, Mapping):
        raise TypeError(
            f"relations must be a mapping {{symbol: expression}} such as SCHEDULE_RELATIONS, got {type(relations).__name__}"
        )
    lhs_list, rhs_list = _as_list(lhs), _as_list(rhs)
    if len(lhs_list) != len(rhs_list):
        raise ValueError(
            f"lhs and rhs must have the same number of entries to be compared, got {len(lhs_list)} and {len(rhs_list)}"
        )
    rng = random.Random(20200619)  # deterministic points (Ho et al. 2020 arXiv date)
    for left, right in zip(lhs_list, rhs_list):
        left, right = sp.sympify(left), sp.sympify(right)
        if relations:
            left, right = left.subs(relations), right.subs(relations)
        if not _difference_is_zero(left, right, rng, numeric_check):
            return False
    return True


def _difference_is_zero(left: sp.Expr, right: sp.Expr, rng: random.Random, numeric_check: bool) -> bool:
    diff = left - right
    if diff == 0:
        return True
    if numeric_check and _numerically_differs(left, right, rng):
        return False
    work = diff
    if work.has(sp.log):
        # Split every logarithm of a product or quotient (valid: the arguments are positive
        # quantities, variances and products of alphas).
        work = work.replace(sp.log, lambda arg: sp.log(sp.factor(arg)))
        work = sp.powdenest(sp.expand_log(work, force=True), force=True)
    expanded = sp.expand(work)
    if expanded == 0:
        return True
    # A polynomial in the data/noise symbols is zero iff each coefficient is: cancelling the
    # (small) coefficients one by one is much faster than one big common denominator.
    gens = sorted((s for s in expanded.free_symbols if not s.is_positive), key=str)
    if gens:
        try:
            coeffs = sp.Poly(expanded, *gens).coeffs()
        except sp.PolynomialError:
            coeffs = None
        if coeffs is not None and all(sp.cancel(sp.together(c)) == 0 for c in coeffs):
            return True
    elif sp.cancel(sp.together(expanded)) == 0:
        return True
    return sp.simplify(diff) == 0


# ----------------------------------------------------------------------------------------
# The result type
# ----------------------------------------------------------------------------------------
class Step(NamedTuple):
    """One displayed step of a derivation: a caption (Markdown, may hold $inline math$)
    and a LaTeX formula. Captions of steps that SymPy checked start with ✓ (or ✗)."""

    caption: str
    latex: str


class ProofError(AssertionError):
    """A claimed identity does not hold (or SymPy could not reduce it to zero)."""


_TEXT_MACROS = {
    r"\bar{\alpha}": "ᾱ", r"\tilde{\beta}": "β̃", r"\tilde{\mu}": "μ̃", r"\overset{?}{=}": "≟",
    r"\mathcal{N}": "N", r"\mathbb{E}": "E", r"\varepsilon": "ε", r"\varphi": "φ",
    r"\alpha": "α", r"\beta": "β", r"\sigma": "σ", r"\mu": "μ", r"\theta": "θ", r"\Phi": "Φ", r"\phi": "φ",
    r"\pi": "π", r"\delta": "δ", r"\infty": "∞", r"\mid": "|", r"\|": "‖", r"\log": "log", r"\prod": "∏",
    r"\sum": "Σ", r"\int": "∫", r"\propto": "∝", r"\geq": "≥", r"\leq": "≤", r"\ge": "≥", r"\le": "≤",
    r"\neq": "≠", r"\approx": "≈", r"\cdot": "·", r"\times": "×", r"\partial": "∂", r"\to": "→", r"\sim": "~",
    r"\iff": "⇔", r"\pm": "±", r"\mp": "∓", r"\ldots": "…", r"\dots": "…", r"\qquad": "  ", r"\quad": " ", r"\,": " ", r"\;": " ",
    r"\ ": " ", r"\!": "", r"\nabla": "∇", r"\varnothing": "∅",
    r"\eta": "η", r"\varsigma": "ς", r"\lambda": "λ", r"\hat{x}": "x̂", r"\bar{x}": "x̄",
}
_TEXT_MACRO_RE = re.compile(
    "|".join(
        re.escape(m) + ("(?![a-zA-Z])" if m[-1].isalpha() else "")
        for m in sorted(_TEXT_MACROS, key=len, reverse=True)
    )
)



def _braced(text: str, start: int) -> tuple[str, int]:
    """The content of the brace group opening at ``text[start]`` and the index after it."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i], i + 1
    return text[start + 1 :], len(text)


def _atom(text: str) -> str:
    """Parenthesise ``text`` unless it is a single token such as 2, x_{t-1} or \\sigma_2^2."""
    token = r"\d+|\\?[A-Za-z]+(?:\{[^{}]*\})?(?:_(?:\w|\{[^{}]*\}))?(?:\^(?:\w|\{[^{}]*\}))?"
    return text if re.fullmatch(token, text.strip()) else "(" + text + ")"


def _unfrac(text: str) -> str:
    r"""Rewrite \frac{A}{B} as (A)/(B) and \sqrt{A} as √(A), recursively."""
    for macro in (r"\frac", r"\sqrt"):
        while True:
            i = text.find(macro)
            if i < 0 or i + len(macro) >= len(text) or text[i + len(macro)] != "{":
                break
            a, j = _braced(text, i + len(macro))
            if macro == r"\sqrt":
                text = text[:i] + "√(" + a + ")" + text[j:]
            elif j < len(text) and text[j] == "{":
                b, k = _braced(text, j)
                frac = _atom(a) + "/" + _atom(b)
                if i > 0 and (text[i - 1].isalnum() or text[i - 1] in "})"):
                    frac = "(" + frac + ")"
                text = text[:i] + frac + text[k:]
            else:
                break
    return text


def _plain(text: str) -> str:
    """Rough LaTeX -> Unicode for the terminal (``Proof.as_text``)."""
    text = _unfrac(text.replace("$", ""))
    text = _TEXT_MACRO_RE.sub(lambda m: _TEXT_MACROS[m.group(0)], text)
    text = re.sub(r"\\(?:text|mathrm|operatorname|mathbf|textbf)\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\\[a-zA-Z]+", "", text)  # \left, \mathrm, \text, \Big, ...
    return re.sub(r"\s+", " ", text).strip()


def _latex_caption(caption: str) -> str:
    """Markdown caption with $inline math$ -> a LaTeX line (\\text{} around the words)."""
    parts = caption.split("$")
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(part)
        elif part:
            # MathJax takes \text{} content literally; only keep braces balanced and hide the
            # characters that would still act: % (comment) and & (array column separator).
            escaped = part.replace("\\", "").replace("{", "(").replace("}", ")")
            escaped = escaped.replace("%", r"\%").replace("&", r"\&")
            out.append(r"\text{" + escaped + "}")
    return " ".join(out)


@dataclass(frozen=True)
class Proof:
    """What a derivation proved, ready to display in a notebook or print in a terminal.

    Attributes:
        name: short title, Markdown with $inline math$, e.g. "Posterior $q(x_{t-1} \\mid x_t, x_0)$ by Bayes' rule".
        statement_latex: the identity in LaTeX, as the book states it.
        lhs, rhs: the main identity as SymPy objects (a ``sp.Tuple`` when it is a pair of
            mean and variance, say).
        steps: the derivation, one :class:`Step` (caption, latex) per line; the caption of
            a SymPy-checked equality starts with ✓ (✗ if it failed).
        holds: True when every checked claim held.
        reference: where the identity comes from (Ho et al. 2020 equation, the article's section).
        checks: how many equalities SymPy checked.
        failures: captions of the claims that failed (only non-empty with ``strict=False``).
    """

    name: str
    statement_latex: str
    lhs: object
    rhs: object
    steps: tuple[Step, ...]
    holds: bool
    reference: str = ""
    checks: int = 0
    failures: tuple[str, ...] = field(default=())

    # -- display -------------------------------------------------------------------
    def _verdict(self) -> str:
        if self.holds:
            return f"verified by SymPy ({self.checks} equalities checked)"
        return f"FAILS: {len(self.failures)} of {self.checks} checked equalities do not hold"

    def _result_line(self) -> str:
        """One line: the verdict, and for a failing proof the steps that fail. ✓ and ✗ rather than
        emoji, which a browser without an emoji font shows as empty boxes."""
        if self.holds:
            return "**✓ Proved:** " + self._verdict()
        failing = [str(i) for i, step in enumerate(self.steps, 1) if step.caption.startswith("✗")]
        which = ("step " if len(failing) == 1 else "steps ") + ", ".join(failing)
        return "**✗ " + self._verdict() + f"** ({which} below, marked ✗)"

    def _repr_markdown_(self) -> str:
        """The statement typeset and the one-line result; the derivation folded beneath them.

        The steps sit in an HTML ``<details>`` block, one click away: closed when the proof holds,
        open when it fails (so the failing step shows). Blank lines around the ``<details>`` and
        ``<summary>`` tags let Markdown typeset the ``$$`` math between them (CommonMark ends an
        HTML block at a blank line), in Jupyter and in the built book alike. A formula wider than
        the page's column is set over several lines (:func:`~ddpm_tutor.derivations._layout.break_lines`).
        """
        lines = [f"**{self.name}**" + (f" — *{self.reference}*" if self.reference else ""), ""]
        lines += ["$$", break_lines(self.statement_latex), "$$", ""]
        lines += [self._result_line(), ""]
        n = len(self.steps)
        lines += ["<details open>" if not self.holds else "<details>"]
        lines += [f"<summary>The derivation, step by step ({n} steps, SymPy)</summary>", ""]
        for i, step in enumerate(self.steps, 1):
            lines += [f"{i}. {step.caption}", "", "$$", break_lines(step.latex), "$$", ""]
        lines += ["</details>"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        """One short line (under 80 characters), so a notebook's plain-text output never runs wide."""
        name = _plain(self.name)
        head = f"<Proof {'ok' if self.holds else 'FAILS'}, {self.checks} checks: "
        room = 78 - len(head)
        if len(name) > room:
            name = name[: room - 1] + "…"
        return head + name + ">"

    def _repr_latex_(self) -> str:
        rows = [_latex_caption(self.name).replace(r"\text{", r"\textbf{"), self.statement_latex]
        for i, step in enumerate(self.steps, 1):
            rows.append(_latex_caption(f"{i}. {step.caption}"))
            rows.append(r"\quad " + step.latex)
        rows.append(r"\text{" + self._verdict() + "}")
        return "$$\\begin{array}{l}\n" + " \\\\\n".join(rows) + "\n\\end{array}$$"

    def as_text(self) -> str:
        """Plain-text summary for the terminal: verdict, title, reference, statement, steps."""
        head = f"[{'ok' if self.holds else 'FAIL'}] {_plain(self.name)}"
        lines = [head]
        if self.reference:
            lines.append(f"      {self.reference}")
        lines.append(f"      claim: {_plain(self.statement_latex)}")
        for step in self.steps:
            lines.append(f"      - {_plain(step.caption)}")
        lines.append(f"      {self._verdict()}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.as_text()

    def __bool__(self) -> bool:
        return self.holds


class _Derivation:
    """Collects the steps of one derivation and checks every claimed equality."""

    def __init__(self, name: str, statement_latex: str, reference: str, strict: bool):
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {type(strict).__name__}")
        self.name, self.statement_latex, self.reference, self.strict = name, statement_latex, reference, strict
        self.steps: list[Step] = []
        self.failures: list[str] = []
        self.checks = 0

    def note(self, caption: str, latex_str: str) -> None:
        """A definition or premise: displayed, not checked."""
        self.steps.append(Step(caption, latex_str))

    def claim(self, caption: str, lhs, rhs, relations: Mapping | None = None, latex_str: str | None = None) -> bool:
        """Check ``lhs == rhs`` (under ``relations``) and record it as a step."""
        ok = check_identity(lhs, rhs, relations)
        self.checks += 1
        if latex_str is None:
            latex_str = f"{latex(lhs)} = {latex(rhs)}"
        if not ok:
            latex_str += r"\qquad\textbf{(does not hold)}"
        self.steps.append(Step(("✓ " if ok else "✗ ") + caption, latex_str))
        if not ok:
            self.failures.append(caption)
            if self.strict:
                raise ProofError(
                    f"{self.name}: the step '{caption}' does not hold: "
                    f"{sp.sstr(lhs)} != {sp.sstr(rhs)}" + (f" under {relations}" if relations else "")
                )
        return ok

    def finish(self, lhs, rhs) -> Proof:
        return Proof(
            name=self.name,
            statement_latex=self.statement_latex,
            lhs=lhs,
            rhs=rhs,
            steps=tuple(self.steps),
            holds=not self.failures,
            reference=self.reference,
            checks=self.checks,
            failures=tuple(self.failures),
        )


def _sympify_claim(value, name: str) -> sp.Expr:
    """Turn a user-supplied claimed formula into a SymPy expression, naming the argument on failure."""
    try:
        return sp.sympify(value)
    except (sp.SympifyError, TypeError) as exc:
        raise TypeError(
            f"{name} must be a SymPy expression built from ddpm_tutor.derivations.sym, got {value!r}"
        ) from exc
