"""Chapter 6: the eps-parameterisation of mu_theta and the weight that L_simple drops.

Ho et al. 2020, eqs. (10)-(12) and (14); the article's parameterisation-trick section.
"""

from __future__ import annotations

import sympy as sp

from ._core import SCHEDULE_RELATIONS, Proof, _Derivation, _sympify_claim, latex, split_sums, sym
from .forward import predict_x0_expr
from .posterior import posterior_mean_expr, posterior_variance_expr

__all__ = ["eps_weight", "mu_from_eps_expr", "eps_parameterisation"]


def eps_weight(beta=None, alpha=None, alpha_bar=None, sigma2=None) -> sp.Expr:
    """w_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)), the weight of ||eps - eps_theta||^2 in L_{t-1}.

    Ho et al. 2020, eq. (12): L_{t-1} - C = w_t E||eps - eps_theta||^2; L_simple (eq. 14) sets
    w_t = 1. Arguments default to the symbols ``sym.beta_t, sym.alpha_t, sym.alpha_bar_t,
    sym.sigma2_t``; pass numbers (or other expressions) to evaluate it, or use
    ``sympy.lambdify`` on the symbolic result.
    """
    beta = sym.beta_t if beta is None else sp.sympify(beta)
    alpha = sym.alpha_t if alpha is None else sp.sympify(alpha)
    alpha_bar = sym.alpha_bar_t if alpha_bar is None else sp.sympify(alpha_bar)
    sigma2 = sym.sigma2_t if sigma2 is None else sp.sympify(sigma2)
    return beta**2 / (2 * sigma2 * alpha * (1 - alpha_bar))


def mu_from_eps_expr(xt=sym.xt, eps=sym.eps) -> sp.Expr:
    """(x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t) (Ho et al. 2020, eq. 10-11).

    With the true noise ``eps`` it is mu_tilde_t; with ``eps_theta`` it is the model's mean mu_theta.
    """
    return (xt - sym.beta_t / sp.sqrt(1 - sym.alpha_bar_t) * eps) / sp.sqrt(sym.alpha_t)


def eps_parameterisation(mean_eps=None, weight=None, *, strict: bool = True) -> Proof:
    """mu_tilde_t in terms of eps, and ||mu_tilde - mu_theta||^2 / (2 sigma_t^2) = w_t ||eps - eps_theta||^2.

    Substituting x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) into mu_tilde_t(x_t, x_0)
    gives (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) (eq. 10); choosing
    mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t) (eq. 11) makes the
    KL term a weighted squared error of the noises (eq. 12) with weight :func:`eps_weight`.

    Args:
        mean_eps: claimed mu_tilde_t in ``sym.xt, sym.eps`` and schedule symbols
            (default :func:`mu_from_eps_expr`).
        weight: claimed w_t in schedule symbols and ``sym.sigma2_t`` (default :func:`eps_weight`).
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.

    The returned proof's ``lhs`` is ``(mu_tilde_t with x_0 substituted, ||mu_tilde - mu_theta||^2 / (2 sigma_t^2)
    over d coordinates)``, derived; ``rhs`` the claimed ``(mean_eps, w_t ||eps - eps_theta||^2)``.
    """
    mean_claim = mu_from_eps_expr() if mean_eps is None else _sympify_claim(mean_eps, "mean_eps")
    w_claim = eps_weight() if weight is None else _sympify_claim(weight, "weight")
    d = _Derivation(
        r"The $\varepsilon$-parameterisation and the weight of $\|\varepsilon - \varepsilon_\theta\|^2$",
        r"\frac{\|\tilde{\mu}_t - \mu_\theta\|^2}{2\sigma_t^2} = "
        r"\frac{\beta_t^2}{2\sigma_t^2\,\alpha_t(1-\bar{\alpha}_t)}\,\|\varepsilon - \varepsilon_\theta\|^2",
        "Ho et al. 2020, eqs. (10)-(12) and (14); the article's parameterisation-trick section",
        strict,
    )
    x0_of_eps = predict_x0_expr()
    d.note(
        r"the inverse closed form (proved in chapter 2) expresses $x_0$ with $x_t$ and the noise",
        r"x_0 = " + latex(x0_of_eps),
    )
    mu_tilde_eps = posterior_mean_expr(x0=x0_of_eps)
    d.claim(
        r"substituted into $\tilde{\mu}_t(x_t, x_0)$, the posterior mean is a function of $x_t$ and $\varepsilon$ "
        r"(using $\beta_t = 1-\alpha_t$, $\bar{\alpha}_t = \alpha_t\bar{\alpha}_{t-1}$)",
        mu_tilde_eps,
        mean_claim,
        relations=SCHEDULE_RELATIONS,
        latex_str=r"\tilde{\mu}_t\Big(x_t, " + latex(x0_of_eps) + r"\Big) = " + latex(mean_claim),
    )
    mu_theta = mu_from_eps_expr(eps=sym.eps_theta)
    d.note(
        r"the model's mean uses the same formula with the network's $\varepsilon_\theta(x_t, t)$ (eq. 11)",
        r"\mu_\theta(x_t, t) = " + latex(mu_theta),
    )
    coef = -sym.beta_t / (sp.sqrt(sym.alpha_t) * sp.sqrt(1 - sym.alpha_bar_t))
    d.claim(
        r"the difference of the means is proportional to the difference of the noises ($x_t$ cancels)",
        mean_claim - mu_theta,
        coef * (sym.eps - sym.eps_theta),
        relations=SCHEDULE_RELATIONS,
        latex_str=r"\tilde{\mu}_t - \mu_\theta = " + latex(coef) + r"\,(\varepsilon - \varepsilon_\theta)",
    )
    # Any number of coordinates d: symbolic sums over i = 1..d, split by linearity.
    i, n = sp.Symbol("i", integer=True, positive=True), sp.Symbol("d", integer=True, positive=True)
    E, Et = sp.IndexedBase("eps"), sp.IndexedBase("eps_theta")
    lhs_d = sp.Sum((coef * (E[i] - Et[i])) ** 2, (i, 1, n)) / (2 * sym.sigma2_t)
    rhs_d = w_claim * sp.Sum((E[i] - Et[i]) ** 2, (i, 1, n))
    lhs, rhs = split_sums(lhs_d), split_sums(rhs_d)
    d.claim(
        r"so the KL's squared error of means is a weighted squared error of noises, for any number $d$ of "
        r"coordinates (symbolic sums over the pixels)",
        lhs,
        rhs,
        relations=SCHEDULE_RELATIONS,
        latex_str=r"\frac{1}{2\sigma_t^2}\sum_{i=1}^{d}(\tilde{\mu}_{t,i} - \mu_{\theta,i})^2 = "
        + latex(w_claim) + r"\sum_{i=1}^{d}(\varepsilon_i - \varepsilon_{\theta,i})^2",
    )
    beta_tilde = posterior_variance_expr()
    d.claim(
        r"with $\sigma_t^2 = \beta_t$ the weight is $\beta_t / (2\alpha_t(1-\bar{\alpha}_t))$",
        w_claim.subs(sym.sigma2_t, sym.beta_t),
        sym.beta_t / (2 * sym.alpha_t * (1 - sym.alpha_bar_t)),
        relations=SCHEDULE_RELATIONS,
        latex_str=r"w_t\big|_{\sigma_t^2=\beta_t} = \frac{\beta_t}{2\alpha_t(1-\bar{\alpha}_t)}",
    )
    d.claim(
        r"with $\sigma_t^2 = \tilde{\beta}_t$ it is $\beta_t / (2\alpha_t(1-\bar{\alpha}_{t-1}))$ (for $t \geq 2$)",
        w_claim.subs(sym.sigma2_t, beta_tilde),
        sym.beta_t / (2 * sym.alpha_t * (1 - sym.alpha_bar_tm1)),
        relations=SCHEDULE_RELATIONS,
        latex_str=r"w_t\big|_{\sigma_t^2=\tilde{\beta}_t} = \frac{\beta_t}{2\alpha_t(1-\bar{\alpha}_{t-1})}",
    )
    d.note(
        r"$L_\mathrm{simple}$ (eq. 14) drops $w_t$, i.e. reweights the terms of the bound; the ELBO keeps it",
        r"L_\mathrm{simple} = \mathbb{E}_{t, x_0, \varepsilon}\big\|\varepsilon - \varepsilon_\theta"
        r"(\sqrt{\bar{\alpha}_t}x_0 + \sqrt{1-\bar{\alpha}_t}\varepsilon, t)\big\|^2",
    )
    return d.finish(sp.Tuple(mu_tilde_eps, lhs), sp.Tuple(mean_claim, rhs))
