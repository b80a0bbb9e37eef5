"""Chapter 5: the variational bound, from the product of steps to the L_0 / L_T / L_{t-1} terms.

Ho et al. 2020, eqs. (3) and (5) and their appendix A; the article's training-objective section (its ELBO expansion and regrouping).
The log-densities are symbols (``log q(x_t | x_{t-1})`` and so on): the regrouping is an
identity between sums of logarithms that holds for any densities with the Markov and
Bayes structure, checked for concrete T and, with SymPy sums, for every T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import sympy as sp

from ._core import SCHEDULE_RELATIONS, Proof, _Derivation, _sympify_claim, latex, log_normal, split_sums, sym
from .forward import linear_gaussian_moments
from .kl import gaussian_moments_by_integration, kl_normal_expr
from .posterior import posterior_mean_expr, posterior_variance_expr

__all__ = [
    "ElboSymbols",
    "elbo_symbols",
    "elbo_expanded",
    "elbo_regrouped",
    "bayes_substitution",
    "elbo_decomposition",
    "regrouped_any_T",
    "GapSymbols",
    "gap_symbols",
    "elbo_inequality",
    "expect_standard_normal",
    "grouped_term_is_kl",
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
    """log p(x_T) + sum_{t=1}^T log [p_theta(x_{t-1} | x_t) / q(x_t | x_{t-1})] (the article's expanded ELBO)."""
    return sp.log(S.p_xT) + sum(sp.log(S.p[t]) - sp.log(S.q_step[t]) for t in range(1, S.T + 1))


def elbo_regrouped(S: ElboSymbols) -> sp.Expr:
    """The regrouped log-ratio whose expectation is eq. (5) (the article's regrouped ELBO).

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
    """LaTeX of :func:`elbo_expanded` as the article writes it, one log-ratio per t."""
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


def regrouped_any_T(log_p_theta, log_q_marg, log_q_post, log_p_xT, t, T) -> sp.Expr:
    """The regrouped form for symbolic T (a SymPy ``Sum``), the log-densities being functions of the step t.

    log p_theta(x_0 | x_1) - [log q(x_T | x_0) - log p(x_T)] - sum_{t=2}^T [log q(x_{t-1} | x_t, x_0) - log p_theta(x_{t-1} | x_t)].
    """
    return log_p_theta(1) - (log_q_marg(T) - log_p_xT) - sp.Sum(log_q_post(t) - log_p_theta(t), (t, 2, T))


def elbo_decomposition(
    T: int | Iterable[int] = (3, 4),
    regrouped: Callable[[ElboSymbols], sp.Expr] | None = None,
    *,
    regrouped_symbolic: Callable | None = None,
    bayes_variance=None,
    strict: bool = True,
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
        regrouped_symbolic: claimed regrouping for symbolic T, a function like
            :func:`regrouped_any_T` (default).
        bayes_variance: the variance of q(x_{t-1} | x_t, x_0) claimed in the Gaussian Bayes
            identity (default beta_tilde_t, :func:`~ddpm_tutor.derivations.posterior_variance_expr`).
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.

    The returned proof's ``lhs`` is the product form after the Bayes substitution (largest T
    given), ``rhs`` the claimed regrouping.
    """
    Ts = [T] if isinstance(T, int) and not isinstance(T, bool) else list(T)
    if not Ts:
        raise ValueError("T must name at least one step count, e.g. T=3 or T=(3, 4)")
    symbol_sets = [elbo_symbols(n) for n in Ts]
    if regrouped is not None and not callable(regrouped):
        raise TypeError("regrouped must be a function ElboSymbols -> SymPy expression, like elbo_regrouped")
    build = elbo_regrouped if regrouped is None else regrouped
    if regrouped_symbolic is not None and not callable(regrouped_symbolic):
        raise TypeError("regrouped_symbolic must be a function like regrouped_any_T")
    build_any = regrouped_any_T if regrouped_symbolic is None else regrouped_symbolic
    var_bayes = posterior_variance_expr() if bayes_variance is None else _sympify_claim(bayes_variance, "bayes_variance")

    d = _Derivation(
        r"The bound regrouped into $L_0$, $L_T$ and $L_{t-1}$",
        r"\log\frac{p_\theta(x_{0:T})}{q(x_{1:T}\mid x_0)} = \log p_\theta(x_0\mid x_1)"
        r" - \log\frac{q(x_T\mid x_0)}{p(x_T)} - \sum_{t=2}^{T}\log\frac{q(x_{t-1}\mid x_t,x_0)}{p_\theta(x_{t-1}\mid x_t)}",
        "Ho et al. 2020, eqs. (3) and (5), appendix A; the article's training-objective section",
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
            f"$T = {n}$: the log of the ratio of products is the article's sum of log-ratios",
            sp.log(ratio),
            expanded,
            latex_str=r"\log\frac{p_\theta(x_{0:" + str(n) + r"})}{q(x_{1:" + str(n) + r"}\mid x_0)} = "
            + _expanded_latex(S),
        )
        substituted = expanded.subs(bayes_substitution(S))
        claimed = build(S)
        d.claim(
            f"$T = {n}$: with Bayes for $t \\geq 2$ the marginals telescope into the regrouped form",
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
    # left: the product form after Bayes, log p(x_T) + [log p(x_0|x_1) - log q(x_1|x_0)]
    #       + sum_{t>=2} [log p - (log q_post + log q_marg(t) - log q_marg(t-1))]; right: the claimed regrouping
    left_any = lpT + lp(1) - lqm(1) + sp.Sum(lp(t) - (lqp(t) + lqm(t) - lqm(t - 1)), (t, 2, Tn))
    right_any = build_any(lp, lqm, lqp, lpT, t, Tn)
    d.claim(
        r"any $T$: split by linearity, the sums cancel term by term and the marginals telescope, leaving the regrouped form",
        split_sums(left_any),
        split_sums(right_any),
        latex_str=r"\log p(x_T) + \sum_{t=1}^T\log\frac{p_\theta(x_{t-1}\mid x_t)}{q(x_t\mid x_{t-1})}"
        r" = " + (
            r"\log p_\theta(x_0\mid x_1) - \log\frac{q(x_T\mid x_0)}{p(x_T)}"
            r" - \sum_{t=2}^T\log\frac{q(x_{t-1}\mid x_t,x_0)}{p_\theta(x_{t-1}\mid x_t)}"
            if regrouped_symbolic is None
            else latex(right_any)
        ),
    )

    # The Bayes identity for the actual 1-D Gaussians (uses the posterior of eq. 7).
    step = log_normal(sym.xt, sp.sqrt(sym.alpha_t) * sym.x_tm1, sym.beta_t)
    bayes = (
        log_normal(sym.x_tm1, posterior_mean_expr(), var_bayes)
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
        r"taking $\mathbb{E}_{q(x_{1:T}\mid x_0)}$ turns each group into a KL (the tower property: "
        r"its own proof, once the Gaussian KL is proved); "
        r"the sign convention: $L = -L_\mathrm{VLB} = L_T + \sum_{t\geq2} L_{t-1} + L_0$",
        r"L_\mathrm{VLB} = \mathbb{E}_q[\log p_\theta(x_0\mid x_1)] - D_\mathrm{KL}(q(x_T\mid x_0)\,\|\,p(x_T))"
        r" - \sum_{t=2}^T\mathbb{E}_q\big[D_\mathrm{KL}(q(x_{t-1}\mid x_t,x_0)\,\|\,p_\theta(x_{t-1}\mid x_t))\big]",
    )
    return d.finish(substituted, claimed)  # those of the largest T given


# ----------------------------------------------------------------------------------------
# The inequality itself: log p_theta(x_0) >= L_VLB, with the gap a KL divergence
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GapSymbols:
    """Positive density symbols at one path x_{1:T} (for a fixed x_0), for :func:`elbo_inequality`.

    Attributes:
        p_x0: p_theta(x_0), the model's marginal likelihood (a number for fixed x_0).
        p_cond: p_theta(x_{1:T} | x_0), the model's posterior over paths.
        q_path: q(x_{1:T} | x_0), the forward process's law of paths.
    """

    p_x0: sp.Symbol
    p_cond: sp.Symbol
    q_path: sp.Symbol


def gap_symbols() -> GapSymbols:
    """The symbols of :class:`GapSymbols`."""
    P = dict(positive=True)
    return GapSymbols(
        sp.Symbol("p_theta(x_0)", **P), sp.Symbol("p_theta(x_1:T|x_0)", **P), sp.Symbol("q(x_1:T|x_0)", **P)
    )


_GAP_NAMES = {
    "p_theta(x_0)": r"p_\theta(x_0)",
    "p_theta(x_1:T|x_0)": r"p_\theta(x_{1:T}\mid x_0)",
    "q(x_1:T|x_0)": r"q(x_{1:T}\mid x_0)",
}


def elbo_inequality(gap: Callable[[GapSymbols], sp.Expr] | None = None, *, strict: bool = True) -> Proof:
    """log p_theta(x_0) - L_VLB = KL(q(x_{1:T} | x_0) || p_theta(x_{1:T} | x_0)) >= 0 (Ho et al. eq. 3).

    The source writes the inequality "by Jensen". Here it is an equality plus a sign:

    1. p_theta(x_{0:T}) = p_theta(x_0) p_theta(x_{1:T} | x_0) (definition of a conditional density),
       so, path by path, log p_theta(x_0) - log[p_theta(x_{0:T}) / q(x_{1:T} | x_0)] = log[q / p_theta(x_{1:T} | x_0)];
       averaged over q(x_{1:T} | x_0) (log p_theta(x_0) is constant in x_{1:T}) the gap is the KL.
    2. Gibbs' inequality, from log u <= u - 1: f(u) = u - 1 - log u is convex on u > 0 with its only
       stationary point at u = 1, where f = 0; with u = p_theta(x_{1:T}|x_0) / q, -KL = E_q[log u]
       <= E_q[u - 1] = int p_theta(x_{1:T}|x_0) - int q = 1 - 1 = 0.
    3. For the 1-D Gaussians of the bound's terms the KL formula is f(sigma_1^2/sigma_2^2)/2 +
       (mu_1 - mu_2)^2 / (2 sigma_2^2), a sum of two terms >= 0 that vanishes only when the two
       Gaussians are equal.

    Args:
        gap: claimed integrand of the gap, a function of :class:`GapSymbols` (default
            log(q / p_theta(x_{1:T} | x_0)), the KL's integrand).
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.

    The returned proof's ``lhs`` is log p_theta(x_0) - log[p_theta(x_{0:T}) / q] written with the
    factorisation of step 1, ``rhs`` the claimed integrand.
    """
    G = gap_symbols()
    if gap is not None and not callable(gap):
        raise TypeError("gap must be a function GapSymbols -> SymPy expression, e.g. lambda G: sp.log(G.q_path / G.p_cond)")
    claim_gap = sp.log(G.q_path / G.p_cond) if gap is None else _sympify_claim(gap(G), "gap")
    names = {s: _GAP_NAMES[s.name] for s in (G.p_x0, G.p_cond, G.q_path)}
    d = _Derivation(
        r"The bound is below $\log p_\theta(x_0)$: the gap is a KL divergence",
        r"\log p_\theta(x_0) - L_\mathrm{VLB} = D_\mathrm{KL}\big(q(x_{1:T}\mid x_0)\,\|\,p_\theta(x_{1:T}\mid x_0)\big)"
        r" \ge 0",
        "Ho et al. 2020, eq. (3) (the source's \"by Jensen\")",
        strict,
    )
    d.note(
        r"definition of the conditional density, and of the bound",
        r"p_\theta(x_{0:T}) = p_\theta(x_0)\,p_\theta(x_{1:T}\mid x_0),\qquad"
        r" L_\mathrm{VLB} = \mathbb{E}_{q(x_{1:T}\mid x_0)}\Big[\log\frac{p_\theta(x_{0:T})}{q(x_{1:T}\mid x_0)}\Big]",
    )
    joint = G.p_x0 * G.p_cond
    derived_gap = sp.log(G.p_x0) - sp.log(joint / G.q_path)
    d.claim(
        r"path by path, $\log p_\theta(x_0)$ minus the log-ratio is the log-ratio of the two laws of paths",
        derived_gap,
        claim_gap,
        latex_str=latex(derived_gap, names) + " = " + latex(claim_gap, names),
    )
    d.note(
        r"$\log p_\theta(x_0)$ does not depend on the path and $q(x_{1:T}\mid x_0)$ integrates to 1, so averaging "
        r"over $q$ gives the gap as the expectation of that log-ratio: a KL divergence (its definition)",
        r"\log p_\theta(x_0) - L_\mathrm{VLB} = \mathbb{E}_q\Big[\log\frac{q(x_{1:T}\mid x_0)}{p_\theta(x_{1:T}\mid x_0)}\Big]"
        r" = D_\mathrm{KL}\big(q(x_{1:T}\mid x_0)\,\|\,p_\theta(x_{1:T}\mid x_0)\big)",
    )
    u = sp.Symbol("u", positive=True)
    f = u - 1 - sp.log(u)
    d.claim(
        r"Gibbs' inequality: $f(u) = u - 1 - \log u$ has its only stationary point on $u > 0$ at $u = 1$",
        sp.Tuple(*sp.solve(sp.diff(f, u), u)),
        sp.Tuple(1),
        latex_str=r"f'(u) = 1 - \frac{1}{u} = 0 \iff u = 1",
    )
    d.claim(
        r"where $f(1) = 0$, and $f'' = 1/u^2 > 0$: $f$ is convex, so $f \geq 0$, i.e. $\log u \leq u - 1$",
        sp.Tuple(f.subs(u, 1), sp.diff(f, u, 2), sp.Integer(bool(sp.diff(f, u, 2).is_positive))),
        sp.Tuple(0, 1 / u**2, 1),
        latex_str=r"f(1) = 0,\quad f''(u) = \frac{1}{u^2} > 0",
    )
    ratio = G.p_cond / G.q_path
    d.claim(
        r"with $u = p_\theta(x_{1:T}\mid x_0)/q(x_{1:T}\mid x_0)$, the integrand of $\mathbb{E}_q[u - 1]$ is the "
        r"difference of two densities, each integrating to 1: so $-D_\mathrm{KL} = \mathbb{E}_q[\log u] \leq 0$",
        G.q_path * (ratio - 1),
        G.p_cond - G.q_path,
        latex_str=r"q\,(u - 1) = p_\theta(x_{1:T}\mid x_0) - q(x_{1:T}\mid x_0),\qquad"
        r" \mathbb{E}_q[u-1] = 1 - 1 = 0",
    )
    m1, s1, m2, s2 = sym.mu_1, sym.sigma_1, sym.mu_2, sym.sigma_2
    d.claim(
        r"for two 1-D Gaussians (the KL proved by integration) the KL is $f(\sigma_1^2/\sigma_2^2)/2$ plus a square: "
        r"$\geq 0$, and $= 0$ only for equal Gaussians",
        kl_normal_expr(),
        f.subs(u, s1**2 / s2**2) / 2 + (m1 - m2) ** 2 / (2 * s2**2),
        latex_str=r"D_\mathrm{KL}\big(\mathcal{N}(\mu_1,\sigma_1^2)\,\|\,\mathcal{N}(\mu_2,\sigma_2^2)\big)"
        r" = \tfrac12 f\Big(\frac{\sigma_1^2}{\sigma_2^2}\Big) + \frac{(\mu_1-\mu_2)^2}{2\sigma_2^2}",
    )
    return d.finish(derived_gap, claim_gap)


# ----------------------------------------------------------------------------------------
# Each grouped expectation is a KL: the tower property
# ----------------------------------------------------------------------------------------
def expect_standard_normal(expr, noises) -> sp.Expr:
    """E[expr] for ``expr`` a polynomial in independent N(0, 1) ``noises`` (coefficients may hold anything else).

    Each monomial prod_i z_i^{k_i} has expectation prod_i E[z^{k_i}], the moments being integrated
    by SymPy (:func:`~ddpm_tutor.derivations.gaussian_moments_by_integration`).
    """
    poly = sp.Poly(sp.expand(sp.sympify(expr)), *noises)
    moments = gaussian_moments_by_integration(max(poly.degree(z) for z in noises))
    total = sp.Integer(0)
    for monom, coef in poly.terms():
        term = coef
        for k in monom:
            term *= moments[k]
        total += term
    return total


def grouped_term_is_kl(kl=None, *, strict: bool = True) -> Proof:
    """E_{q(x_{1:T}|x_0)}[log q(x_{t-1}|x_t,x_0) / p_theta(x_{t-1}|x_t)] = E_{q(x_t|x_0)}[KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t))].

    The step of eq. (5) where each grouped log-ratio becomes a KL. The log-ratio depends on the path
    only through (x_{t-1}, x_t); under q(x_{1:T} | x_0) that pair has the law of the chain,
    q(x_{t-1} | x_0) q(x_t | x_{t-1}), which by the Bayes identity is q(x_t | x_0) q(x_{t-1} | x_t, x_0);
    the tower property then averages x_{t-1} first, for fixed x_t, which is the KL.

    Checked for 1-D Gaussians with a model mean that is any linear function c x_t + e of x_t and any
    fixed sigma_t^2: the left side is integrated directly under the chain's definition
    (x_{t-1} = sqrt(alpha_bar_{t-1}) x_0 + sqrt(1 - alpha_bar_{t-1}) z_1, x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z_2),
    the right side with the claimed KL formula inside one expectation over x_t ~ q(x_t | x_0).

    Args:
        kl: claimed 1-D KL in ``sym.mu_1, sym.sigma_1, sym.mu_2, sym.sigma_2`` (standard deviations);
            default :func:`~ddpm_tutor.derivations.kl_normal_expr`.
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.

    The returned proof's ``lhs`` is the expectation under the chain, ``rhs`` the expected claimed KL.
    """
    kl_claim = kl_normal_expr() if kl is None else _sympify_claim(kl, "kl")
    a, ab, abp, b, s2 = sym.alpha_t, sym.alpha_bar_t, sym.alpha_bar_tm1, sym.beta_t, sym.sigma2_t
    c, e = sp.Symbol("c", real=True), sp.Symbol("e", real=True)
    z, z1, z2 = sym.z, sp.Symbol("z_1", real=True), sp.Symbol("z_2", real=True)
    mu_tilde, beta_tilde, mu_theta = posterior_mean_expr(), posterior_variance_expr(), c * sym.xt + e

    def kl_of(m1, v1, m2, v2):
        return kl_claim.subs({sym.mu_1: m1, sym.sigma_1: sp.sqrt(v1), sym.mu_2: m2, sym.sigma_2: sp.sqrt(v2)}, simultaneous=True)

    d = _Derivation(
        r"Each grouped expectation is a KL (the tower property)",
        r"\mathbb{E}_{q(x_{1:T}\mid x_0)}\Big[\log\frac{q(x_{t-1}\mid x_t,x_0)}{p_\theta(x_{t-1}\mid x_t)}\Big]"
        r" = \mathbb{E}_{q(x_t\mid x_0)}\Big[D_\mathrm{KL}\big(q(x_{t-1}\mid x_t,x_0)\,\|\,p_\theta(x_{t-1}\mid x_t)\big)\Big]",
        "Ho et al. 2020, eq. (5) and appendix A",
        strict,
    )
    d.note(
        r"the log-ratio depends on the path only through $(x_{t-1}, x_t)$, whose law under $q(x_{1:T}\mid x_0)$ is the "
        r"chain's: $x_{t-1} \sim q(x_{t-1}\mid x_0)$, then one forward step",
        r"x_{t-1} = \sqrt{\bar{\alpha}_{t-1}}\,x_0 + \sqrt{1-\bar{\alpha}_{t-1}}\,z_1,\qquad"
        r" x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{\beta_t}\,z_2,\qquad z_1, z_2 \sim \mathcal{N}(0,1)",
    )
    chain_joint = log_normal(sym.x_tm1, sp.sqrt(abp) * sym.x0, 1 - abp) + log_normal(sym.xt, sp.sqrt(a) * sym.x_tm1, b)
    tower_joint = log_normal(sym.xt, sp.sqrt(ab) * sym.x0, 1 - ab) + log_normal(sym.x_tm1, mu_tilde, beta_tilde)
    d.claim(
        r"Bayes: the same joint density factorises the other way round, $x_t$ first, then $x_{t-1}$ given $x_t$",
        chain_joint,
        tower_joint,
        relations=SCHEDULE_RELATIONS,
        latex_str=r"\log q(x_{t-1}\mid x_0) + \log q(x_t\mid x_{t-1}) = \log q(x_t\mid x_0) + \log q(x_{t-1}\mid x_t, x_0)",
    )
    log_ratio = log_normal(sym.x_tm1, mu_tilde, beta_tilde) - log_normal(sym.x_tm1, mu_theta, s2)
    m, v, mp = sp.Symbol("m", real=True), sp.Symbol("v", positive=True), sp.Symbol("m_theta", real=True)
    inner_ratio = log_normal(sym.x, m, v) - log_normal(sym.x, mp, s2)
    inner = expect_standard_normal(inner_ratio.subs(sym.x, m + sp.sqrt(v) * z), [z])
    d.claim(
        r"inner expectation, for fixed $x_t$: with $q(x_{t-1}\mid x_t,x_0) = \mathcal{N}(m, v)$ and "
        r"$p_\theta(x_{t-1}\mid x_t) = \mathcal{N}(m_\theta, \sigma_t^2)$ ($x_{t-1} = m + \sqrt{v}\,z$) it is the claimed KL",
        inner,
        kl_of(m, v, mp, s2),
        latex_str=r"\mathbb{E}_{z}\Big[\log\frac{\mathcal{N}(m + \sqrt{v}z;\ m, v)}{\mathcal{N}(m + \sqrt{v}z;\ m_\theta, \sigma_t^2)}\Big]"
        r" = " + latex(kl_of(m, v, mp, s2), {m: "m", v: "v", mp: r"m_\theta"}),
    )
    x_tm1_chain = sp.sqrt(abp) * sym.x0 + sp.sqrt(1 - abp) * z1
    x_t_chain = sp.sqrt(a) * x_tm1_chain + sp.sqrt(b) * z2
    d.claim(
        r"under the chain, $x_t$ alone has the law $q(x_t\mid x_0)$ that the outer expectation uses (mean and variance)",
        sp.Tuple(*linear_gaussian_moments(x_t_chain, [z1, z2])),
        sp.Tuple(sp.sqrt(ab) * sym.x0, 1 - ab),
        relations=SCHEDULE_RELATIONS,
        latex_str=r"\mathbb{E}[x_t] = \sqrt{\bar{\alpha}_t}\,x_0,\qquad \mathrm{Var}[x_t] = 1 - \bar{\alpha}_t",
    )
    lhs = expect_standard_normal(log_ratio.subs({sym.x_tm1: x_tm1_chain, sym.xt: x_t_chain}, simultaneous=True), [z1, z2])
    rhs = expect_standard_normal(kl_of(mu_tilde, beta_tilde, mu_theta, s2).subs(sym.xt, sp.sqrt(ab) * sym.x0 + sp.sqrt(1 - ab) * z), [z])
    d.claim(
        r"the whole expectation, integrated under the chain, equals the expected KL over $x_t \sim q(x_t\mid x_0)$",
        lhs,
        rhs,
        relations=SCHEDULE_RELATIONS,
        latex_str=r"\mathbb{E}_{z_1, z_2}\big[\log\tfrac{q}{p_\theta}(x_{t-1}, x_t)\big]"
        r" = \mathbb{E}_{z}\big[D_\mathrm{KL}\big](\sqrt{\bar{\alpha}_t}x_0 + \sqrt{1-\bar{\alpha}_t}z)",
    )
    return d.finish(lhs, rhs)
