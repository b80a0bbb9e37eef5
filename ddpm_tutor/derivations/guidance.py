"""Chapter 12: why classifier-free guidance is eps_u + s (eps_c - eps_u).

Three identities, each from its definitions:

1. :func:`eps_score_relation`: for Gaussian data the best (minimum mean-square) predictor of the noise is
   E[eps | x_t] = -sqrt(1 - alpha_bar_t) grad log p_t(x_t) (Tweedie's formula in this notation), so a
   noise prediction *is* a scaled score.
2. :func:`bayes_for_scores`: grad log p_t(x | c) = grad log p_t(x) + grad log p_t(c | x) (the evidence
   p_t(c) does not depend on x), so eps_u + s (eps_c - eps_u) follows the score of
   p_t(x) p_t(c | x)^s = p_t(x | c)^s p_t(x)^(1-s) p_t(c)^s.
3. :func:`guidance_conventions`: Ho & Salimans (2022, eq. 6) write (1 + w) eps_c - w eps_u; that is the
   same rule with s = 1 + w. The variant (1 + w) eps_c + w eps_u is not a guidance rule at all.

Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", sec. 3.2 and eq. (6); Dhariwal & Nichol 2021,
sec. 4 (classifier guidance); Efron 2011 (Tweedie's formula).
"""

from __future__ import annotations

import sympy as sp

from ._core import Proof, _Derivation, _sympify_claim, latex, log_normal, sym

__all__ = [
    "gsym",
    "eps_score_relation",
    "bayes_for_scores",
    "guidance_conventions",
    "guided_eps_expr",
    "GUIDANCE_NAMES",
]


class _GuidanceSymbols:
    """Symbols of chapter 12 (with ``sym.alpha_bar_t`` and ``sym.xt`` of the paper)."""

    def __init__(self) -> None:
        R, P = dict(real=True), dict(positive=True)
        self.m = sp.Symbol("m", **R)  # mean of the Gaussian data x_0 ~ N(m, v)
        self.v = sp.Symbol("v", **P)  # its variance
        self.eps_c = sp.Symbol("eps_c", **R)  # eps_theta(x_t, c): with the label
        self.eps_u = sp.Symbol("eps_u", **R)  # eps_theta(x_t, no label)
        self.e = sp.Symbol("e", **R)  # a common value of both
        self.s = sp.Symbol("s", **R)  # guidance scale, this book's convention
        self.w = sp.Symbol("w", **R)  # guidance weight, Ho & Salimans' convention (s = 1 + w)
        self.x = sp.Symbol("x", **R)  # the noisy image x_t, as the variable of the densities
        self.p = sp.Function("p")  # p_t(x)
        self.r = sp.Function("r")  # p_t(c | x), the label's likelihood
        self.p_c = sp.Symbol("p_c", **P)  # p_t(c), the evidence: no x in it


gsym = _GuidanceSymbols()

#: Typeset names of :data:`gsym` for :func:`ddpm_tutor.derivations.latex`.
GUIDANCE_NAMES = {
    gsym.eps_c: r"\varepsilon_c", gsym.eps_u: r"\varepsilon_\varnothing", gsym.p_c: r"p_t(c)",
    gsym.e: r"\varepsilon", gsym.m: "m", gsym.v: "v",
}


def _latex(expr) -> str:
    """LaTeX with the chapter's names: p(x) is p_t(x), r(x) is p_t(c | x)."""
    text = latex(expr, GUIDANCE_NAMES)
    return text.replace(r"p{\left(x \right)}", "p_t(x)").replace(r"r{\left(x \right)}", r"p_t(c \mid x)")


def guided_eps_expr(eps_c=gsym.eps_c, eps_u=gsym.eps_u, s=gsym.s) -> sp.Expr:
    """eps_u + s (eps_c - eps_u): the guided noise prediction of :func:`ddpm_tutor.guidance.combine`."""
    return eps_u + s * (eps_c - eps_u)


# ----------------------------------------------------------------------------------------------- 1
def eps_score_relation(score_factor=None, dims: tuple[int, ...] = (1, 2), *, strict: bool = True) -> Proof:
    """For x_0 ~ N(m, v) (scalar) and a diagonal Gaussian (``d`` coordinates, each its own m_i, v_i):
    E[eps | x_t] = c * grad log p_t(x_t) with c = -sqrt(1 - alpha_bar_t).

    From the definitions only: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with eps ~ N(0, I), so
    given eps, x_t ~ N(sqrt(alpha_bar_t) m + sqrt(1 - alpha_bar_t) eps, alpha_bar_t v). The joint log-density of
    (eps, x_t) is quadratic in eps; its stationary point is the posterior mean E[eps | x_t], which is the minimum
    mean-square predictor (what L_simple trains eps_theta towards). Bayes' rule log p_t(x_t) = log p(eps) +
    log p(x_t | eps) - log p(eps | x_t), true for every eps, checks the marginal p_t(x_t) =
    N(sqrt(alpha_bar_t) m, alpha_bar_t v + 1 - alpha_bar_t), whose gradient is the score.

    Args:
        score_factor: claimed c (default -sqrt(1 - alpha_bar_t)); e.g. -1 / sqrt(1 - alpha_bar_t) is rejected.
        dims: the numbers of coordinates to prove it for (1: scalar; 2 to 4: diagonal covariance).
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.
    """
    dims = (dims,) if isinstance(dims, int) and not isinstance(dims, bool) else tuple(dims)
    if not dims or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4 for n in dims):
        raise ValueError(f"dims must be ints in 1..4 (coordinates of the diagonal Gaussian), got {dims!r}")
    ab = sym.alpha_bar_t
    c = -sp.sqrt(1 - ab) if score_factor is None else _sympify_claim(score_factor, "score_factor")
    d = _Derivation(
        r"The noise predictor is a scaled score (Tweedie's formula for Gaussian data)",
        r"\mathbb{E}[\varepsilon \mid x_t] = -\sqrt{1-\bar{\alpha}_t}\;\nabla_{x_t} \log p_t(x_t)",
        "Ho & Salimans 2022, sec. 2; Efron 2011 (Tweedie's formula); Ho et al. 2020, eq. (4)",
        strict,
    )
    d.note(
        r"data and the closed form: given $\varepsilon$, $x_t$ is Gaussian because $x_0$ is",
        r"x_0 \sim \mathcal{N}(m, v),\quad x_t = \sqrt{\bar{\alpha}_t}x_0 + \sqrt{1-\bar{\alpha}_t}\,\varepsilon"
        r"\quad\Rightarrow\quad x_t \mid \varepsilon \sim \mathcal{N}\big(\sqrt{\bar{\alpha}_t}m + \sqrt{1-\bar{\alpha}_t}"
        r"\varepsilon,\ \bar{\alpha}_t v\big)",
    )
    lhs = rhs = None
    for n in dims:
        if n == 1:
            ms, vs, xs, es = [gsym.m], [gsym.v], [sym.xt], [sym.eps]
            case = "scalar"
        else:
            ms = list(sp.symbols(f"m_1:{n + 1}", real=True))
            vs = list(sp.symbols(f"v_1:{n + 1}", positive=True))
            xs = list(sp.symbols(f"x_t1:{n + 1}", real=True))
            es = list(sp.symbols(f"eps_1:{n + 1}", real=True))
            case = f"diagonal, $d = {n}$, coordinate by coordinate"
        # log p(eps) + log p(x_t | eps), summed over the independent coordinates
        joint = sum(log_normal(e, 0, 1) + log_normal(x, sp.sqrt(ab) * m + sp.sqrt(1 - ab) * e, ab * v)
                    for m, v, x, e in zip(ms, vs, xs, es))
        # E[eps | x_t]: the joint log-density is a concave quadratic in eps, so its maximiser is the posterior mean
        solution = sp.solve([sp.diff(joint, e) for e in es], es, dict=True)[0]
        post_mean = [sp.simplify(solution[e]) for e in es]
        post_var = [sp.simplify(-1 / sp.diff(joint, e, 2)) for e in es]
        if n == dims[0]:
            d.note(
                r"$\log p(\varepsilon, x_t)$ is quadratic in $\varepsilon$: $\mathbb{E}[\varepsilon \mid x_t]$ (the "
                r"minimum mean-square predictor) is its stationary point, $-1/\partial^2_\varepsilon$ its variance",
                r"\mathbb{E}[\varepsilon \mid x_t] = " + _latex(post_mean[0]) + r",\quad "
                r"\operatorname{Var}[\varepsilon \mid x_t] = " + _latex(post_var[0]),
            )
        marginal = sum(log_normal(x, sp.sqrt(ab) * m, ab * v + 1 - ab) for m, v, x in zip(ms, vs, xs))
        posterior = sum(log_normal(e, pm, pv) for e, pm, pv in zip(es, post_mean, post_var))
        d.claim(
            r"Bayes' rule, for every $\varepsilon$ (" + case + r"): the marginal is $p_t(x_t) = "
            r"\mathcal{N}(\sqrt{\bar{\alpha}_t}m,\ \bar{\alpha}_t v + 1 - \bar{\alpha}_t)$",
            joint - posterior,
            marginal,
            latex_str=r"\log p(\varepsilon) + \log p(x_t \mid \varepsilon) - \log p(\varepsilon \mid x_t) = "
            r"\log \mathcal{N}\big(x_t;\ \sqrt{\bar{\alpha}_t}m,\ \bar{\alpha}_t v + 1 - \bar{\alpha}_t\big)",
        )
        score = [sp.diff(marginal, x) for x in xs]
        lhs, rhs = sp.Tuple(*post_mean), sp.Tuple(*[c * g for g in score])
        d.claim(
            r"the noise predictor is the score times the claimed factor (" + case + ")",
            lhs,
            rhs,
            latex_str=r"\mathbb{E}[\varepsilon \mid x_t] = " + _latex(post_mean[0]) + " = " + _latex(c)
            + r"\;\nabla_{x_t}\log p_t(x_t)",
        )
    return d.finish(lhs, rhs)


# ----------------------------------------------------------------------------------------------- 2
def bayes_for_scores(rule=None, tilted=None, *, strict: bool = True) -> Proof:
    """grad log p_t(x | c) = grad log p_t(x) + grad log p_t(c | x), so the guided rule follows p_t(x) p_t(c | x)^s.

    Args:
        rule: claimed guided prediction in ``gsym.eps_c, gsym.eps_u, gsym.s`` (default
            :func:`guided_eps_expr`); e.g. (1 + s) eps_c - s eps_u is rejected (it tilts by p_t(c | x)^(1+s)).
        tilted: claimed log of the density the rule samples, up to a constant in x, in terms of
            ``gsym.p(x)``, the conditional ``gsym.p(x) * gsym.r(x) / gsym.p_c`` and ``gsym.s`` (default
            s log p_t(x | c) + (1 - s) log p_t(x)); e.g. s log p_t(x | c) + s log p_t(x) is rejected.
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.
    """
    x, s, p, r, p_c = gsym.x, gsym.s, gsym.p(gsym.x), gsym.r(gsym.x), gsym.p_c
    sigma = sp.sqrt(1 - sym.alpha_bar_t)
    p_cond = p * r / p_c  # Bayes: p_t(x | c) = p_t(x) p_t(c | x) / p_t(c)
    rule = guided_eps_expr() if rule is None else _sympify_claim(rule, "rule")
    tilted = s * sp.log(p_cond) + (1 - s) * sp.log(p) if tilted is None else _sympify_claim(tilted, "tilted")
    d = _Derivation(
        r"Bayes' rule for scores: what guidance with scale $s$ samples",
        r"\varepsilon_\varnothing + s(\varepsilon_c - \varepsilon_\varnothing) = -\sqrt{1-\bar{\alpha}_t}\;"
        r"\nabla_x \log\big[p_t(x)\,p_t(c \mid x)^s\big],\quad p_t(x)\,p_t(c \mid x)^s \propto "
        r"p_t(x \mid c)^s\,p_t(x)^{1-s}",
        "Ho & Salimans 2022, sec. 3.2; Dhariwal & Nichol 2021, sec. 4",
        strict,
    )
    d.note(r"Bayes' rule; the evidence $p_t(c)$ holds no $x$",
           r"p_t(x \mid c) = \frac{p_t(x)\,p_t(c \mid x)}{p_t(c)}")
    grad = lambda f: sp.diff(f, x)  # noqa: E731 - the score is d/dx of a log-density
    d.claim(
        r"the conditional score is the unconditional score plus the label's score",
        grad(sp.log(p_cond)),
        grad(sp.log(p)) + grad(sp.log(r)),
        latex_str=r"\nabla_x \log p_t(x \mid c) = \nabla_x \log p_t(x) + \nabla_x \log p_t(c \mid x)",
    )
    eps_u, eps_c = -sigma * grad(sp.log(p)), -sigma * grad(sp.log(p_cond))  # eps = -sqrt(1 - alpha_bar) score
    d.note(r"the network's two predictions are scaled scores (the first identity)",
           r"\varepsilon_\varnothing = -\sqrt{1-\bar{\alpha}_t}\,\nabla_x\log p_t(x),\quad "
           r"\varepsilon_c = -\sqrt{1-\bar{\alpha}_t}\,\nabla_x\log p_t(x \mid c)")
    target = -sigma * grad(sp.log(p) + s * sp.log(r))
    d.claim(
        r"so the guided prediction is the scaled score of $p_t(x)\,p_t(c \mid x)^s$: the label's likelihood "
        r"raised to the power $s$",
        rule.subs({gsym.eps_c: eps_c, gsym.eps_u: eps_u}),
        target,
        latex_str=_latex(rule) + r" = -\sqrt{1-\bar{\alpha}_t}\;\nabla_x\log\big[p_t(x)\,p_t(c \mid x)^s\big]",
    )
    d.claim(
        r"and, up to a constant in $x$ (which no score sees), that density is $p_t(x \mid c)^s\,p_t(x)^{1-s}$: "
        r"$s = 0$ unconditional, $s = 1$ conditional, $s > 1$ beyond it",
        grad(tilted),
        grad(sp.log(p) + s * sp.log(r)),
        latex_str=r"\nabla_x\Big[" + _latex(tilted) + r"\Big] = \nabla_x\log\big[p_t(x)\,p_t(c \mid x)^s\big]",
    )
    d.claim(
        r"at $s = 1$ the rule follows the conditional score, so it samples $p_t(x \mid c)$",
        rule.subs({gsym.eps_c: eps_c, gsym.eps_u: eps_u, s: 1}),
        -sigma * grad(sp.log(p_cond)),
        latex_str=r"\Big[" + _latex(rule) + r"\Big]_{s=1} = -\sqrt{1-\bar{\alpha}_t}\;\nabla_x\log p_t(x \mid c)",
    )
    return d.finish(rule.subs({gsym.eps_c: eps_c, gsym.eps_u: eps_u}), target)


# ----------------------------------------------------------------------------------------------- 3
def guidance_conventions(rule=None, *, strict: bool = True) -> Proof:
    """(1 + w) eps_c - w eps_u is eps_u + s (eps_c - eps_u) with s = 1 + w; any guidance rule returns e when
    eps_c = eps_u = e.

    Args:
        rule: claimed rule in ``gsym.eps_c, gsym.eps_u, gsym.w`` (default Ho & Salimans' (1 + w) eps_c - w eps_u);
            the variant (1 + w) eps_c + w eps_u is rejected by both claims.
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.
    """
    eps_c, eps_u, w, e = gsym.eps_c, gsym.eps_u, gsym.w, gsym.e
    rule = (1 + w) * eps_c - w * eps_u if rule is None else _sympify_claim(rule, "rule")
    d = _Derivation(
        r"The two conventions for the guidance weight are one rule",
        r"(1+w)\,\varepsilon_c - w\,\varepsilon_\varnothing = \varepsilon_\varnothing + s(\varepsilon_c - "
        r"\varepsilon_\varnothing)\quad\text{with } s = 1 + w",
        "Ho & Salimans 2022, eq. (6)",
        strict,
    )
    d.claim(
        r"with $s = 1 + w$ the rule is this book's $\varepsilon_\varnothing + s(\varepsilon_c - \varepsilon_\varnothing)$",
        rule,
        guided_eps_expr(s=1 + w),
        latex_str=_latex(rule) + r" = \Big[" + _latex(guided_eps_expr(s=sp.Symbol("s"))) + r"\Big]_{s = 1 + w}",
    )
    d.claim(
        r"a guidance rule must leave a prediction alone when the label changes nothing ($\varepsilon_c = "
        r"\varepsilon_\varnothing$): its two weights sum to 1",
        rule.subs({eps_c: e, eps_u: e}),
        e,
        latex_str=r"\Big[" + _latex(rule) + r"\Big]_{\varepsilon_c = \varepsilon_\varnothing = \varepsilon} = \varepsilon",
    )
    d.claim(
        r"$w = 0$ is the plain conditional prediction",
        rule.subs(w, 0),
        eps_c,
        latex_str=r"\Big[" + _latex(rule) + r"\Big]_{w=0} = \varepsilon_c",
    )
    d.claim(
        r"and $w = -1$ (that is, $s = 0$) the unconditional one",
        rule.subs(w, -1),
        eps_u,
        latex_str=r"\Big[" + _latex(rule) + r"\Big]_{w=-1} = \varepsilon_\varnothing",
    )
    return d.finish(rule, guided_eps_expr(s=1 + w))
