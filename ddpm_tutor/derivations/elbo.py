"""Chapter 5: the variational bound, from the product of steps to the L_0 / L_T / L_{t-1} terms.

Ho et al. 2020, eqs. (3) and (5) and their appendix A; article lines 124-147 (formulas on lines 128, 130, 133).
The log-densities are symbols (``log q(x_t | x_{t-1})`` and so on): the regrouping is an
identity between sums of logarithms that holds for any densities with the Markov and
Bayes structure, checked for concrete T and, with SymPy sums, for every T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import sympy as sp

from ._core import SCHEDULE_RELATIONS, Proof, _Derivation, latex, log_normal, sym
from .posterior import posterior_mean_expr, posterior_variance_expr

__all__ = [
    "ElboSymbols",
    "elbo_symbols",
    "elbo_expanded",
    "elbo_regrouped",
    "bayes_substitution",
    "elbo_decomposition",
]


@dataclass(frozen=True)
class ElboSymbols:
    """Positive density symbols of a T-step chain (paper indexing); ``log`` of them are the log-densities.

    Attributes:
        T: number of steps.
        p_xT: p(x_T), the fixed prior N(0, I).
        p: ``p[t]`` = p_theta(x_{t-1} | x_t) for t = 1..T.
        q_step: ``q_step[t]`` = q(x_t | x_{t-1}) for t = 1..T (eq. 2).
        q_marg: ``q_marg[t]`` = q(x_t | x_0) for t = 1..T (eq. 4).
        q_post: ``q_post[t]`` = q(x_{t-1} | x_t, x_0) for t = 2..T (eq. 6).
        names: LaTeX name of every symbol, for display.
    """

    T: int
    p_xT: sp.Symbol
    p: dict
    q_step: dict
    q_marg: dict
    q_post: dict
    names: dict


def elbo_symbols(T: int) -> ElboSymbols:
    """The density symbols of a chain with ``T >= 2`` steps (see :class:`ElboSymbols`)."""
    if isinstance(T, bool) or not isinstance(T, int):
        raise TypeError(f"T must be an int (the number of diffusion steps), got {type(T).__name__}")
    if T < 2:
        raise ValueError(f"T must be >= 2 for the bound to have L_{{t-1}} terms, got {T}")
    P = dict(positive=True)
    names = {}

    def make(name: str, tex: str) -> sp.Symbol:
        s = sp.Symbol(name, **P)
        names[s] = tex
        return s

    p_xT = make(f"p(x_{T})", f"p(x_{{{T}}})")
    p = {t: make(f"p_theta(x_{t-1}|x_{t})", rf"p_\theta(x_{{{t-1}}}\mid x_{{{t}}})") for t in range(1, T + 1)}
    q_step = {t: make(f"q(x_{t}|x_{t-1})", rf"q(x_{{{t}}}\mid x_{{{t-1}}})") for t in range(1, T + 1)}
    q_marg = {t: make(f"q(x_{t}|x_0)", rf"q(x_{{{t}}}\mid x_0)") for t in range(1, T + 1)}
    q_post = {t: make(f"q(x_{t-1}|x_{t},x_0)", rf"q(x_{{{t-1}}}\mid x_{{{t}}}, x_0)") for t in range(2, T + 1)}
    # q(x_1 | x_0) is both the first step and the first marginal: one symbol.
    q_step[1] = q_marg[1]
    return ElboSymbols(T, p_xT, p, q_step, q_marg, q_post, names)


def elbo_expanded(S: ElboSymbols) -> sp.Expr:
    """log p(x_T) + sum_{t=1}^T log [p_theta(x_{t-1} | x_t) / q(x_t | x_{t-1})] (article line 130)."""
    return sp.log(S.p_xT) + sum(sp.log(S.p[t]) - sp.log(S.q_step[t]) for t in range(1, S.T + 1))


def elbo_regrouped(S: ElboSymbols) -> sp.Expr:
    """The regrouped log-ratio whose expectation is eq. (5) (article line 133).

    log p_theta(x_0 | x_1) - log [q(x_T | x_0) / p(x_T)] - sum_{t=2}^T log [q(x_{t-1} | x_t, x_0) / p_theta(x_{t-1} | x_t)]:
    the reconstruction term (-L_0), the prior term (-L_T) and the denoising terms (-L_{t-1}).
    """
    return (
        sp.log(S.p[1])
        - (sp.log(S.q_marg[S.T]) - sp.log(S.p_xT))
        - sum(sp.log(S.q_post[t]) - sp.log(S.p[t]) for t in range(2, S.T + 1))
    )


def bayes_substitution(S: ElboSymbols) -> dict:
    """q(x_t | x_{t-1}) = q(x_{t-1} | x_t, x_0) q(x_t | x_0) / q(x_{t-1} | x_0) for t = 2..T (Markov + Bayes)."""
    return {S.q_step[t]: S.q_post[t] * S.q_marg[t] / S.q_marg[t - 1] for t in range(2, S.T + 1)}


def _expanded_latex(S: ElboSymbols) -> str:
    """LaTeX of :func:`elbo_expanded` as the article writes it (line 130), one log-ratio per t."""
    n = S.names
    ratios = " + ".join(rf"\log\frac{{{n[S.p[t]]}}}{{{n[S.q_step[t]]}}}" for t in range(1, S.T + 1))
    return rf"\log {n[S.p_xT]} + " + ratios


def _grouped_latex(S: ElboSymbols) -> str:
    """LaTeX of the sum of log-ratios after the Bayes substitution, one bracket per t, uncancelled."""
    L = lambda s: r"\log " + S.names[s]  # noqa: E731
    parts = [L(S.p_xT), rf"\big[{L(S.p[1])} - {L(S.q_marg[1])}\big]"]
    for t in range(2, S.T + 1):
        parts.append(
            rf"\big[{L(S.p[t])} - {L(S.q_post[t])} - {L(S.q_marg[t])} + {L(S.q_marg[t - 1])}\big]"
        )
    return " + ".join(parts)


def _regrouped_latex(S: ElboSymbols) -> str:
    """LaTeX of :func:`elbo_regrouped` with its three groups visible."""
    n = S.names
    kls = " + ".join(rf"\log\frac{{{n[S.q_post[t]]}}}{{{n[S.p[t]]}}}" for t in range(2, S.T + 1))
    return (
        rf"\log {n[S.p[1]]} - \log\frac{{{n[S.q_marg[S.T]]}}}{{{n[S.p_xT]}}} - \big[{kls}\big]"
    )


def elbo_decomposition(
    T: int | Iterable[int] = (3, 4), regrouped: Callable[[ElboSymbols], sp.Expr] | None = None, *, strict: bool = True
) -> Proof:
    """log p_theta(x_{0:T}) / q(x_{1:T} | x_0) regrouped into the L_0, L_T and L_{t-1} terms (eq. 5).

    1. The Markov factorisations turn the log-ratio into log p(x_T) + sum_t log p_theta(x_{t-1}|x_t) / q(x_t|x_{t-1}).
    2. Bayes, q(x_t | x_{t-1}) = q(x_{t-1} | x_t, x_0) q(x_t | x_0) / q(x_{t-1} | x_0), makes the
       ratio of marginals telescope, leaving the regrouped form (checked for each T given, and
       for symbolic T with SymPy sums).
    3. The Bayes identity holds for the actual 1-D Gaussians with mu_tilde and beta_tilde of eq. (7).

    Args:
        T: one step count >= 2 or several (default 3 and 4).
        regrouped: claimed regrouping, a function of :class:`ElboSymbols` returning an
            expression in their logs (default :func:`elbo_regrouped`).
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.
    """
    Ts = [T] if isinstance(T, int) and not isinstance(T, bool) else list(T)
    if not Ts:
        raise ValueError("T must name at least one step count, e.g. T=3 or T=(3, 4)")
    symbol_sets = [elbo_symbols(n) for n in Ts]
    if regrouped is not None and not callable(regrouped):
        raise TypeError("regrouped must be a function ElboSymbols -> SymPy expression, like elbo_regrouped")
    build = elbo_regrouped if regrouped is None else regrouped

    d = _Derivation(
        r"The bound regrouped into $L_0$, $L_T$ and $L_{t-1}$",
        r"\log\frac{p_\theta(x_{0:T})}{q(x_{1:T}\mid x_0)} = \log p_\theta(x_0\mid x_1)"
        r" - \log\frac{q(x_T\mid x_0)}{p(x_T)} - \sum_{t=2}^{T}\log\frac{q(x_{t-1}\mid x_t,x_0)}{p_\theta(x_{t-1}\mid x_t)}",
        "Ho et al. 2020, eqs. (3) and (5), appendix A; article lines 124-133",
        strict,
    )
    d.note(
        "both processes are Markov chains (eqs. 1-2)",
        r"p_\theta(x_{0:T}) = p(x_T)\prod_{t=1}^T p_\theta(x_{t-1}\mid x_t),\qquad"
        r" q(x_{1:T}\mid x_0) = \prod_{t=1}^T q(x_t\mid x_{t-1})",
    )
    for S in symbol_sets:
        n = S.T
        ratio = S.p_xT * sp.Mul(*[S.p[t] for t in range(1, n + 1)]) / sp.Mul(*[S.q_step[t] for t in range(1, n + 1)])
        expanded = elbo_expanded(S)
        d.claim(
            f"$T = {n}$: the log of the ratio of products is the article's sum of log-ratios (line 130)",
            sp.log(ratio),
            expanded,
            latex_str=r"\log\frac{p_\theta(x_{0:" + str(n) + r"})}{q(x_{1:" + str(n) + r"}\mid x_0)} = "
            + _expanded_latex(S),
        )
        substituted = expanded.subs(bayes_substitution(S))
        claimed = build(S)
        d.claim(
            f"$T = {n}$: with Bayes for $t \\geq 2$ the marginals telescope into the regrouped form (line 133)",
            substituted,
            claimed,
            latex_str=_grouped_latex(S)
            + " = "
            + (_regrouped_latex(S) if regrouped is None else latex(claimed, S.names)),
        )

    # Any T: the telescoping sum, with the log-densities as functions of t.
    t, Tn = sp.Symbol("t", integer=True, positive=True), sp.Symbol("T", integer=True, positive=True)
    lp, lqm, lqp = sp.Function("log_p_theta"), sp.Function("log_q_marg"), sp.Function("log_q_post")
    lpT = sp.Symbol("log_p_xT", real=True)
    telescoped = sp.Sum(lqm(t) - lqm(t - 1), (t, 2, Tn)).doit()
    d.claim(
        r"any $T$: the ratios of marginals telescope",
        telescoped,
        lqm(Tn) - lqm(1),
        latex_str=r"\sum_{t=2}^{T}\big(\log q(x_t\mid x_0) - \log q(x_{t-1}\mid x_0)\big)"
        r" = \log q(x_T\mid x_0) - \log q(x_1\mid x_0)",
    )
    # left: log p(x_T) + [log p(x_0|x_1) - log q(x_1|x_0)] + sum_{t>=2} [log p - (log q_post + log q_marg(t) - log q_marg(t-1))]
    # right: log p(x_0|x_1) - (log q(x_T|x_0) - log p(x_T)) + sum_{t>=2} [log p - log q_post]
    term_left = lp(t) - (lqp(t) + lqm(t) - lqm(t - 1))
    term_right = lp(t) - lqp(t)
    boundary = (lpT + lp(1) - lqm(1)) - (lp(1) - lqm(Tn) + lpT)
    d.claim(
        r"any $T$: left minus right is the boundary terms plus one sum (linearity), and it vanishes",
        boundary + sp.Sum(term_left - term_right, (t, 2, Tn)).doit(),
        0,
        latex_str=r"\Big[\log p(x_T) + \sum_{t=1}^T\log\frac{p_\theta(x_{t-1}\mid x_t)}{q(x_t\mid x_{t-1})}\Big]"
        r" - \Big[\log p_\theta(x_0\mid x_1) - \log\frac{q(x_T\mid x_0)}{p(x_T)}"
        r" - \sum_{t=2}^T\log\frac{q(x_{t-1}\mid x_t,x_0)}{p_\theta(x_{t-1}\mid x_t)}\Big] = 0",
    )

    # The Bayes identity for the actual 1-D Gaussians (uses the posterior of eq. 7).
    step = log_normal(sym.xt, sp.sqrt(sym.alpha_t) * sym.x_tm1, sym.beta_t)
    bayes = (
        log_normal(sym.x_tm1, posterior_mean_expr(), posterior_variance_expr())
        + log_normal(sym.xt, sp.sqrt(sym.alpha_bar_t) * sym.x0, 1 - sym.alpha_bar_t)
        - log_normal(sym.x_tm1, sp.sqrt(sym.alpha_bar_tm1) * sym.x0, 1 - sym.alpha_bar_tm1)
    )
    d.claim(
        r"the Bayes identity holds for the Gaussians themselves: $\log q(x_t\mid x_{t-1})$ equals "
        r"$\log \mathcal{N}(x_{t-1}; \tilde{\mu}_t, \tilde{\beta}_t) + \log q(x_t\mid x_0) - \log q(x_{t-1}\mid x_0)$",
        step,
        bayes,
        relations=SCHEDULE_RELATIONS,
        latex_str=r"\log\mathcal{N}(x_t;\sqrt{\alpha_t}x_{t-1},\beta_t) = \log\mathcal{N}(x_{t-1};\tilde{\mu}_t,\tilde{\beta}_t)"
        r" + \log\mathcal{N}(x_t;\sqrt{\bar{\alpha}_t}x_0,1-\bar{\alpha}_t)"
        r" - \log\mathcal{N}(x_{t-1};\sqrt{\bar{\alpha}_{t-1}}x_0,1-\bar{\alpha}_{t-1})",
    )
    d.note(
        r"taking $\mathbb{E}_{q(x_{1:T}\mid x_0)}$ turns each group into a KL (definition of KL, "
        r"the pair $(x_{t-1}, x_t)$ having law $q(x_t\mid x_0)\,q(x_{t-1}\mid x_t,x_0)$); "
        r"the sign convention: $L = -L_\mathrm{VLB} = L_T + \sum_{t\geq2} L_{t-1} + L_0$",
        r"L_\mathrm{VLB} = \mathbb{E}_q[\log p_\theta(x_0\mid x_1)] - D_\mathrm{KL}(q(x_T\mid x_0)\,\|\,p(x_T))"
        r" - \sum_{t=2}^T\mathbb{E}_q\big[D_\mathrm{KL}(q(x_{t-1}\mid x_t,x_0)\,\|\,p_\theta(x_{t-1}\mid x_t))\big]",
    )
    last = symbol_sets[-1]
    return d.finish(elbo_expanded(last).subs(bayes_substitution(last)), build(last))
