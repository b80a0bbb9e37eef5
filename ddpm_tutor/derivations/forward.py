"""Chapters 1-2: the forward process composes into one Gaussian, and its closed form.

Ho et al. 2020, eq. (2) (the forward transition) and eq. (4) (the closed form
q(x_t | x_0)); the article's forward-process section.
"""

from __future__ import annotations

from typing import Sequence

import sympy as sp

from ._core import SCHEDULE_RELATIONS, Proof, _Derivation, _sympify_claim, latex, sym

__all__ = [
    "linear_gaussian_moments",
    "standard_normal_mgf_by_integration",
    "q_sample_expr",
    "predict_x0_expr",
    "predict_eps_expr",
    "forward_composition",
    "closed_form_reparameterisation",
]

_PHI = sp.exp(-sym.z**2 / 2) / sp.sqrt(2 * sp.pi)  # standard normal density phi(z)


def standard_normal_mgf_by_integration(s: sp.Expr = sym.s) -> sp.Expr:
    """E[exp(s z)] for z ~ N(0, 1), computed by ``sympy.integrate`` (it is exp(s^2 / 2))."""
    return sp.integrate(sp.exp(s * sym.z) * _PHI, (sym.z, -sp.oo, sp.oo))


def linear_gaussian_moments(expr, noises: Sequence[sp.Symbol]) -> tuple[sp.Expr, sp.Expr]:
    """Mean and variance of ``expr = c + sum_i a_i * noises[i]`` for independent N(0, 1) noises.

    The moment generating function of such a sum is exp(c s) prod_i exp(a_i^2 s^2 / 2)
    = exp(c s + (sum_i a_i^2) s^2 / 2), which is that of N(c, sum_i a_i^2): the sum is
    Gaussian with mean c and variance sum_i a_i^2 (the lemma :func:`forward_composition`
    checks). Raises ValueError if ``expr`` is not linear in the noises.
    """
    expr = sp.expand(sp.sympify(expr))
    noises = list(noises)
    if not noises or not all(isinstance(n, sp.Symbol) for n in noises):
        raise TypeError("noises must be a non-empty sequence of SymPy symbols (the independent N(0, 1) variables)")
    poly = sp.Poly(expr, *noises)
    if poly.total_degree() > 1:
        raise ValueError(
            f"expr must be linear in the noises {noises} (a Gaussian closure needs a linear combination), "
            f"got total degree {poly.total_degree()}"
        )
    mean = expr.subs({n: 0 for n in noises})
    variance = sum((expr.coeff(n) ** 2 for n in noises), sp.Integer(0))
    return mean, variance


def q_sample_expr(x0=sym.x0, eps=sym.eps, alpha_bar=sym.alpha_bar_t) -> sp.Expr:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4 reparameterised)."""
    return sp.sqrt(alpha_bar) * x0 + sp.sqrt(1 - alpha_bar) * eps


def predict_x0_expr(xt=sym.xt, eps=sym.eps, alpha_bar=sym.alpha_bar_t) -> sp.Expr:
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), the inverse of :func:`q_sample_expr`."""
    return (xt - sp.sqrt(1 - alpha_bar) * eps) / sp.sqrt(alpha_bar)


def predict_eps_expr(xt=sym.xt, x0=sym.x0, alpha_bar=sym.alpha_bar_t) -> sp.Expr:
    """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t), the noise that produced x_t from x_0."""
    return (xt - sp.sqrt(alpha_bar) * x0) / sp.sqrt(1 - alpha_bar)


def forward_composition(
    two_step_variance=None, marginal_mean_coef=None, marginal_variance=None, *, strict: bool = True
) -> Proof:
    """Two Gaussian forward steps compose into one Gaussian; by induction q(x_t | x_0) is eq. (4).

    Two steps, x_{t-1} = sqrt(alpha_{t-1}) x_{t-2} + sqrt(1 - alpha_{t-1}) eps_2 and
    x_t = sqrt(alpha_t) x_{t-1} + sqrt(1 - alpha_t) eps_1, give
    x_t ~ N(sqrt(alpha_t alpha_{t-1}) x_{t-2}, 1 - alpha_t alpha_{t-1}). The induction step:
    q(x_{t-1} | x_0) = N(sqrt(alpha_bar_{t-1}) x_0, 1 - alpha_bar_{t-1}) implies
    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, 1 - alpha_bar_t) with alpha_bar_t = alpha_t alpha_bar_{t-1}.

    Args:
        two_step_variance: claimed variance of the two-step composition, in ``sym.alpha_t``
            and ``sym.alpha_tm1`` (default: the correct 1 - alpha_t alpha_{t-1}).
        marginal_mean_coef: claimed coefficient of x_0 in the mean of q(x_t | x_0)
            (default sqrt(alpha_bar_t)).
        marginal_variance: claimed variance of q(x_t | x_0) (default 1 - alpha_bar_t).
        strict: raise :class:`ProofError` when a claim fails (default); if False, return a
            Proof with ``holds=False``.
    """
    a_t, a_tm1, ab_t, ab_tm1 = sym.alpha_t, sym.alpha_tm1, sym.alpha_bar_t, sym.alpha_bar_tm1
    two_var = 1 - a_t * a_tm1 if two_step_variance is None else _sympify_claim(two_step_variance, "two_step_variance")
    mean_coef = sp.sqrt(ab_t) if marginal_mean_coef is None else _sympify_claim(marginal_mean_coef, "marginal_mean_coef")
    marg_var = 1 - ab_t if marginal_variance is None else _sympify_claim(marginal_variance, "marginal_variance")

    d = _Derivation(
        r"Forward steps compose: $q(x_t \mid x_0)$ in closed form",
        r"q(x_t \mid x_0) = \mathcal{N}\big(x_t;\ \sqrt{\bar{\alpha}_t}\, x_0,\ (1-\bar{\alpha}_t) I\big),"
        r"\qquad \bar{\alpha}_t = \prod_{s=1}^t \alpha_s",
        "Ho et al. 2020, eqs. (2) and (4); the article's forward-process section",
        strict,
    )
    # Lemma: a linear combination of independent standard normals is Gaussian (MGF argument).
    s, c, a1, a2 = sym.s, sp.Symbol("c", real=True), sp.Symbol("a_1", real=True), sp.Symbol("a_2", real=True)
    d.claim(
        r"the moment generating function of $z \sim \mathcal{N}(0,1)$, by integration",
        standard_normal_mgf_by_integration(s),
        sp.exp(s**2 / 2),
        latex_str=r"\int e^{sz}\,\varphi(z)\,dz = e^{s^2/2}",
    )
    d.claim(
        r"so $c + a_1\varepsilon_1 + a_2\varepsilon_2$ (independent noises) has the MGF of $\mathcal{N}(c,\ a_1^2 + a_2^2)$: "
        "variances of independent Gaussians add",
        sp.exp(c * s) * sp.exp((a1 * s) ** 2 / 2) * sp.exp((a2 * s) ** 2 / 2),
        sp.exp(c * s + (a1**2 + a2**2) * s**2 / 2),
        latex_str=r"e^{cs}\, e^{a_1^2 s^2/2}\, e^{a_2^2 s^2/2} = e^{cs + (a_1^2 + a_2^2)s^2/2}",
    )
    # Two steps.
    x_tm1 = sp.sqrt(a_tm1) * sym.x_tm2 + sp.sqrt(1 - a_tm1) * sym.eps_2
    x_t = sp.expand(sp.sqrt(a_t) * x_tm1 + sp.sqrt(1 - a_t) * sym.eps_1)
    d.note(
        "two forward steps (eq. 2 written with noise), substituted into each other",
        r"\begin{aligned}x_t &= \sqrt{\alpha_t}\big(\sqrt{\alpha_{t-1}}\,x_{t-2}"
        r" + \sqrt{1-\alpha_{t-1}}\,\varepsilon_2\big) + \sqrt{1-\alpha_t}\,\varepsilon_1 \\ &= "
        + latex(x_t)
        + r"\end{aligned}",
    )
    mean2, var2 = linear_gaussian_moments(x_t, [sym.eps_1, sym.eps_2])
    d.claim(
        "mean of the two-step composition",
        mean2,
        sp.sqrt(a_t * a_tm1) * sym.x_tm2,
        latex_str=r"\mathbb{E}[x_t \mid x_{t-2}] = \sqrt{\alpha_t\alpha_{t-1}}\,x_{t-2}",
    )
    d.claim(
        "variance of the two-step composition: the squared noise coefficients add",
        var2,
        two_var,
        latex_str=r"\mathrm{Var}[x_t \mid x_{t-2}] = \alpha_t(1-\alpha_{t-1}) + (1-\alpha_t) = " + latex(two_var),
    )
    # Induction.
    d.note(
        r"base case $t = 1$: $\bar{\alpha}_1 = \alpha_1$, so eq. (4) is eq. (2) itself",
        r"q(x_1 \mid x_0) = \mathcal{N}(\sqrt{\alpha_1}\,x_0,\ (1-\alpha_1) I)",
    )
    xt_from_x0 = sp.expand(
        sp.sqrt(a_t) * (sp.sqrt(ab_tm1) * sym.x0 + sp.sqrt(1 - ab_tm1) * sym.eps_2) + sp.sqrt(1 - a_t) * sym.eps_1
    )
    d.note(
        r"induction step: assume $x_{t-1} = \sqrt{\bar{\alpha}_{t-1}}x_0 + \sqrt{1-\bar{\alpha}_{t-1}}\varepsilon_2$, take one step",
        r"x_t = " + latex(xt_from_x0),
    )
    mean_t, var_t = linear_gaussian_moments(xt_from_x0, [sym.eps_1, sym.eps_2])
    d.claim(
        r"mean of $q(x_t \mid x_0)$, using $\bar{\alpha}_t = \alpha_t\bar{\alpha}_{t-1}$",
        mean_t,
        mean_coef * sym.x0,
        relations=SCHEDULE_RELATIONS,
        latex_str=r"\mathbb{E}[x_t \mid x_0] = \sqrt{\alpha_t}\sqrt{\bar{\alpha}_{t-1}}\,x_0 = " + latex(mean_coef * sym.x0),
    )
    d.claim(
        r"variance of $q(x_t \mid x_0)$, using $\bar{\alpha}_t = \alpha_t\bar{\alpha}_{t-1}$",
        var_t,
        marg_var,
        relations=SCHEDULE_RELATIONS,
        latex_str=r"\mathrm{Var}[x_t \mid x_0] = \alpha_t(1-\bar{\alpha}_{t-1}) + (1-\alpha_t) = " + latex(marg_var),
    )
    return d.finish(sp.Tuple(mean_t, var_t), sp.Tuple(mean_coef * sym.x0, marg_var))


def closed_form_reparameterisation(x0_formula=None, eps_formula=None, *, strict: bool = True) -> Proof:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, and its inverses for x_0 and eps.

    The formula for x_t is not derived here: it is the *definition* of the one-jump sampling
    procedure (``q_sample``). What makes it legitimate is :func:`forward_composition`, which
    derives from the Markov chain (by induction on t) that q(x_t | x_0) is
    N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I); this proof checks that the procedure draws
    from exactly that law, then *solves* it (``sympy.solve``) for x_0 and for eps, giving
    eq. (15)'s x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), and compares the
    solutions with the claimed formulas.

    Args:
        x0_formula: claimed x_0 in terms of ``sym.xt``, ``sym.eps``, ``sym.alpha_bar_t``
            (default: the correct inverse, :func:`predict_x0_expr`).
        eps_formula: claimed eps in terms of ``sym.xt``, ``sym.x0``, ``sym.alpha_bar_t``
            (default :func:`predict_eps_expr`).
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.

    The returned proof's ``lhs`` is the pair (x_0, eps) solved for by SymPy, ``rhs`` the claims.
    """
    x0_claim = predict_x0_expr() if x0_formula is None else _sympify_claim(x0_formula, "x0_formula")
    eps_claim = predict_eps_expr() if eps_formula is None else _sympify_claim(eps_formula, "eps_formula")
    ab = sym.alpha_bar_t
    xt_expr = q_sample_expr()
    d = _Derivation(
        "Closed form and its inverse (the reparameterisation)",
        r"x_t = \sqrt{\bar{\alpha}_t}\,x_0 + \sqrt{1-\bar{\alpha}_t}\,\varepsilon"
        r"\iff x_0 = \frac{x_t - \sqrt{1-\bar{\alpha}_t}\,\varepsilon}{\sqrt{\bar{\alpha}_t}},"
        r"\quad \varepsilon \sim \mathcal{N}(0, I)",
        "Ho et al. 2020, eq. (4) and the x_0 of eq. (15)",
        strict,
    )
    d.note(
        r"definition of the one-jump sampling procedure (not derived: the previous proof derived the law it must have)",
        r"x_t := " + latex(xt_expr) + r",\qquad \varepsilon \sim \mathcal{N}(0, I)",
    )
    mean, var = linear_gaussian_moments(xt_expr, [sym.eps])
    d.claim(
        r"the procedure draws from $q(x_t \mid x_0)$ of the previous proof: a linear function of $\varepsilon$ "
        r"with the mean of eq. (4)",
        mean,
        sp.sqrt(ab) * sym.x0,
        latex_str=r"\mathbb{E}[x_t \mid x_0] = \sqrt{\bar{\alpha}_t}\,x_0",
    )
    d.claim(
        r"and the variance of eq. (4)", var, 1 - ab, latex_str=r"\mathrm{Var}[x_t \mid x_0] = 1 - \bar{\alpha}_t"
    )
    x_t = sp.Symbol("x_t", real=True)  # the same symbol as sym.xt
    (x0_solved,) = sp.solve(sp.Eq(x_t, xt_expr), sym.x0)
    (eps_solved,) = sp.solve(sp.Eq(x_t, xt_expr), sym.eps)
    d.claim(
        r"solving $x_t = \sqrt{\bar{\alpha}_t}x_0 + \sqrt{1-\bar{\alpha}_t}\varepsilon$ for $x_0$ (one solution: the map is "
        r"affine with a non-zero slope) gives the claimed inverse",
        x0_solved,
        x0_claim,
        latex_str=r"x_0 = " + latex(x0_solved) + " = " + latex(x0_claim),
    )
    d.claim(
        r"solving it for the noise instead gives the claimed $\varepsilon$",
        eps_solved,
        eps_claim,
        latex_str=r"\varepsilon = " + latex(eps_solved) + " = " + latex(eps_claim),
    )
    d.claim(
        r"check: substituting $x_t$ into the claimed inverse returns $x_0$",
        x0_claim.subs(sym.xt, xt_expr),
        sym.x0,
        latex_str=latex(x0_claim) + r"\Big|_{x_t = " + latex(xt_expr) + "} = x_0",
    )
    return d.finish(sp.Tuple(x0_solved, eps_solved), sp.Tuple(x0_claim, eps_claim))
