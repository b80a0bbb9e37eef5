"""Chapter 3: the forward posterior q(x_{t-1} | x_t, x_0) by Bayes' rule and completing the square.

Ho et al. 2020, eqs. (6)-(7); the article's reverse-process section (its posterior formulas).
"""

from __future__ import annotations

import sympy as sp

from ._core import SCHEDULE_RELATIONS, Proof, _Derivation, _sympify_claim, latex, sym

__all__ = [
    "posterior_variance_expr",
    "posterior_mean_coefs",
    "posterior_mean_expr",
    "bayes_exponent",
    "posterior_by_bayes",
]


def posterior_variance_expr(beta=sym.beta_t, alpha_bar=sym.alpha_bar_t, alpha_bar_prev=sym.alpha_bar_tm1) -> sp.Expr:
    """beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t (Ho et al. 2020, eq. 7).

    The code's ``NoiseSchedule.posterior_variance``. Arguments may be symbols or numbers.
    """
    return (1 - alpha_bar_prev) / (1 - alpha_bar) * beta


def posterior_mean_coefs(
    beta=sym.beta_t, alpha=sym.alpha_t, alpha_bar=sym.alpha_bar_t, alpha_bar_prev=sym.alpha_bar_tm1
) -> tuple[sp.Expr, sp.Expr]:
    """The two coefficients of mu_tilde_t (Ho et al. 2020, eq. 7): ``(coef_x0, coef_xt)``.

    coef_x0 = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)   (``posterior_mean_coef_x0``)
    coef_xt = sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)   (``posterior_mean_coef_xt``)
    """
    coef_x0 = sp.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar)
    coef_xt = sp.sqrt(alpha) * (1 - alpha_bar_prev) / (1 - alpha_bar)
    return coef_x0, coef_xt


def posterior_mean_expr(x0=sym.x0, xt=sym.xt) -> sp.Expr:
    """mu_tilde_t(x_t, x_0) = coef_x0 * x_0 + coef_xt * x_t (Ho et al. 2020, eq. 7)."""
    coef_x0, coef_xt = posterior_mean_coefs()
    return coef_x0 * x0 + coef_xt * xt


def bayes_exponent() -> sp.Expr:
    """The x_{t-1}-dependent part of log q(x_t | x_{t-1}) + log q(x_{t-1} | x_0) (1-D).

    -(x_t - sqrt(alpha_t) x_{t-1})^2 / (2 beta_t) - (x_{t-1} - sqrt(alpha_bar_{t-1}) x_0)^2 / (2 (1 - alpha_bar_{t-1})),
    from eq. (2) and eq. (4) at step t-1. By Bayes, q(x_{t-1} | x_t, x_0) is proportional
    to the exponential of this (q(x_t | x_0) does not depend on x_{t-1}).
    """
    return -((sym.xt - sp.sqrt(sym.alpha_t) * sym.x_tm1) ** 2) / (2 * sym.beta_t) - (
        (sym.x_tm1 - sp.sqrt(sym.alpha_bar_tm1) * sym.x0) ** 2
    ) / (2 * (1 - sym.alpha_bar_tm1))


_ARTICLE_MEAN = (
    r"\tilde{\mu}_t(x_t, x_0) = \frac{\sqrt{\bar{\alpha}_{t-1}}\, \beta_t}{1 - \bar{\alpha}_t}\, x_0"
    r" + \frac{\sqrt{\alpha_t}\,(1 - \bar{\alpha}_{t-1})}{1 - \bar{\alpha}_t}\, x_t"
)
_ARTICLE_VARIANCE = r"\tilde{\beta}_t = \frac{1 - \bar{\alpha}_{t-1}}{1 - \bar{\alpha}_t}\, \beta_t"


def posterior_by_bayes(mean=None, variance=None, *, strict: bool = True) -> Proof:
    """q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I) by completing the square (eqs. 6-7).

    q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0). The sum of the two
    exponents is a quadratic a y^2 + b y + c in y = x_{t-1}; it equals
    -(y - mu)^2 / (2 var) + C(x_t, x_0) with var = -1 / (2a) and mu = -b / (2a). The proof
    shows var and mu are the article's (and the paper's) beta_tilde_t and mu_tilde_t.

    Args:
        mean: claimed posterior mean in ``sym.x0, sym.xt`` and schedule symbols
            (default: :func:`posterior_mean_expr`, the article's form of the posterior mean).
        variance: claimed posterior variance (default: :func:`posterior_variance_expr`).
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.
    """
    mu_claim = posterior_mean_expr() if mean is None else _sympify_claim(mean, "mean")
    var_claim = posterior_variance_expr() if variance is None else _sympify_claim(variance, "variance")
    y = sym.x_tm1
    d = _Derivation(
        r"Posterior $q(x_{t-1} \mid x_t, x_0)$ by Bayes' rule",
        r"q(x_{t-1} \mid x_t, x_0) = \mathcal{N}\big(x_{t-1};\ \tilde{\mu}_t(x_t, x_0),\ \tilde{\beta}_t I\big),\quad "
        + _ARTICLE_MEAN
        + r",\quad "
        + _ARTICLE_VARIANCE,
        "Ho et al. 2020, eqs. (6)-(7); the article's derivation of the posterior",
        strict,
    )
    d.note(
        r"Bayes' rule, with $q(x_t \mid x_{t-1}, x_0) = q(x_t \mid x_{t-1})$ (Markov) and the denominator free of $x_{t-1}$",
        r"q(x_{t-1} \mid x_t, x_0) = \frac{q(x_t \mid x_{t-1})\, q(x_{t-1} \mid x_0)}{q(x_t \mid x_0)}"
        r"\propto \exp\Big(-\frac{(x_t - \sqrt{\alpha_t}x_{t-1})^2}{2\beta_t}"
        r" - \frac{(x_{t-1} - \sqrt{\bar{\alpha}_{t-1}}x_0)^2}{2(1-\bar{\alpha}_{t-1})}\Big)",
    )
    exponent = bayes_exponent()
    poly = sp.Poly(sp.expand(exponent), y)
    a, b = poly.coeff_monomial(y**2), poly.coeff_monomial(y)
    a_form = -sym.alpha_t / (2 * sym.beta_t) - 1 / (2 * (1 - sym.alpha_bar_tm1))
    b_form = sp.sqrt(sym.alpha_t) * sym.xt / sym.beta_t + sp.sqrt(sym.alpha_bar_tm1) * sym.x0 / (1 - sym.alpha_bar_tm1)
    d.claim(
        r"the exponent is a quadratic $a\,x_{t-1}^2 + b\,x_{t-1} + c$ in $x_{t-1}$; the precisions add up in $a$",
        sp.Tuple(a, b),
        sp.Tuple(a_form, b_form),
        latex_str=r"a = -\frac{1}{2}\Big(\frac{\alpha_t}{\beta_t} + \frac{1}{1-\bar{\alpha}_{t-1}}\Big),\qquad "
        r"b = \frac{\sqrt{\alpha_t}}{\beta_t}x_t + \frac{\sqrt{\bar{\alpha}_{t-1}}}{1-\bar{\alpha}_{t-1}}x_0",
    )
    var_derived = -1 / (2 * a)
    mu_derived = -b / (2 * a)
    d.claim(
        r"completing the square, the variance is $-1/(2a)$: the article's $\tilde{\beta}_t$, "
        r"using $\beta_t = 1-\alpha_t$ and $\bar{\alpha}_t = \alpha_t \bar{\alpha}_{t-1}$",
        var_derived,
        var_claim,
        relations=SCHEDULE_RELATIONS,
        latex_str=r"-\frac{1}{2a} = " + latex(var_claim),
    )
    d.claim(
        r"and the mean is $-b/(2a)$: the article's $\tilde{\mu}_t$",
        mu_derived,
        mu_claim,
        relations=SCHEDULE_RELATIONS,
        latex_str=r"-\frac{b}{2a} = " + latex(mu_claim),
    )
    remainder = exponent + (y - mu_claim) ** 2 / (2 * var_claim)
    d.claim(
        r"what is left, $C = \text{exponent} + (x_{t-1} - \tilde{\mu}_t)^2/(2\tilde{\beta}_t)$, is free of $x_{t-1}$",
        sp.diff(remainder, y),
        0,
        relations=SCHEDULE_RELATIONS,
        latex_str=r"\frac{\partial}{\partial x_{t-1}}\Big[\text{exponent} + \frac{(x_{t-1}-\tilde{\mu}_t)^2}{2\tilde{\beta}_t}\Big] = 0",
    )
    d.claim(
        r"the mean is a precision-weighted average: the weight on $x_t$ is "
        r"$\sqrt{\alpha_t}\,\tilde{\beta}_t/\beta_t$ and on $x_0$ is $\sqrt{\bar{\alpha}_{t-1}}\,\tilde{\beta}_t/(1-\bar{\alpha}_{t-1})$",
        sp.Tuple(*posterior_mean_coefs()),
        sp.Tuple(
            sp.sqrt(sym.alpha_bar_tm1) * var_claim / (1 - sym.alpha_bar_tm1), sp.sqrt(sym.alpha_t) * var_claim / sym.beta_t
        ),
        relations=SCHEDULE_RELATIONS,
        latex_str=r"\tilde{\mu}_t = \tilde{\beta}_t\Big(\frac{\sqrt{\bar{\alpha}_{t-1}}}{1-\bar{\alpha}_{t-1}}x_0"
        r" + \frac{\sqrt{\alpha_t}}{\beta_t}x_t\Big)",
    )
    return d.finish(sp.Tuple(mu_derived, var_derived), sp.Tuple(mu_claim, var_claim))
