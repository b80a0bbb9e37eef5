"""Chapter 11: why DDIM and DPM-Solver++ may skip steps.

Song, Meng & Ermon 2021 (DDIM), eqs. (7), (12), (14), (16); Lu et al. 2022 (DPM-Solver++), Algorithm 2.
Paper indexing: t-1 is the step the sampler goes to next (on a sub-sequence, the previous step
visited; its beta_t is then 1 - alpha_bar_t / alpha_bar_{t-1}, and :data:`SCHEDULE_RELATIONS` still hold).
"""

from __future__ import annotations

from typing import Callable

import sympy as sp

from ..samplers.dpm_solver import second_order_weights
from ._core import SCHEDULE_RELATIONS, Proof, _Derivation, _sympify_claim, latex, sym
from .forward import linear_gaussian_moments, predict_x0_expr, q_sample_expr
from .posterior import posterior_mean_expr, posterior_variance_expr

__all__ = [
    "ddim_sigma",
    "ddim_direction_coef",
    "ddim_step_expr",
    "ddim_keeps_the_marginals",
    "ddim_eta_one_is_the_ddpm_posterior",
    "ddim_is_an_exact_ode_step",
    "dpm_solver_2m_coefficients",
]

sigma_t = sp.Symbol("sigma_t", positive=True)  # DDIM's sigma_t (standard deviation of its step)
eta = sp.Symbol("eta", positive=True)
varsigma_t = sp.Symbol("varsigma_t", positive=True)  # sqrt((1 - alpha_bar_t) / alpha_bar_t)
varsigma_s = sp.Symbol("varsigma_s", positive=True)  # the same at the step the sampler goes to
h = sp.Symbol("h", positive=True)  # lambda_s - lambda_t, the step in half-log-SNR
r = sp.Symbol("r", positive=True)  # h_prev / h
alpha_s = sp.Symbol("alpha_s", positive=True)  # sqrt(alpha_bar) at the step the solver goes to
x0_t = sp.Symbol("x0_t", real=True)  # x0_hat at the current step
x0_prev = sp.Symbol("x0_prev", real=True)  # x0_hat one step earlier
varsigma = sp.Symbol("varsigma", positive=True)  # the ODE's variable
lam = sp.Symbol("lambda", real=True)

_NAMES = {
    sigma_t: r"\sigma_t", eta: r"\eta", varsigma_t: r"\varsigma_t", varsigma_s: r"\varsigma_s", h: "h", r: "r",
    alpha_s: r"\alpha_s", varsigma: r"\varsigma", x0_t: r"\hat{x}_0^{(t)}", x0_prev: r"\hat{x}_0^{(t')}", lam: r"\lambda",
}


def _tex(expr) -> str:
    return latex(expr, _NAMES)


def ddim_sigma(eta_value=eta, alpha_bar=sym.alpha_bar_t, alpha_bar_prev=sym.alpha_bar_tm1) -> sp.Expr:
    """DDIM's eq. (16): sigma_t(eta) = eta sqrt((1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_{t-1})."""
    return eta_value * sp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * sp.sqrt(1 - alpha_bar / alpha_bar_prev)


def ddim_direction_coef(sigma=sigma_t, alpha_bar_prev=sym.alpha_bar_tm1) -> sp.Expr:
    """The weight of the "direction pointing to x_t" in DDIM's eq. (12): sqrt(1 - alpha_bar_{t-1} - sigma_t^2)."""
    return sp.sqrt(1 - alpha_bar_prev - sigma**2)


def ddim_step_expr(x0=sym.x0, eps=sym.eps_theta, sigma=sigma_t, noise=sym.z, direction_coef=None) -> sp.Expr:
    """DDIM's step, eq. (12): x_{t-1} = sqrt(alpha_bar_{t-1}) x_0 + sqrt(1 - alpha_bar_{t-1} - sigma_t^2) eps + sigma_t z.

    In q_sigma(x_{t-1} | x_t, x_0) (eq. 7), ``eps`` is (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t);
    in sampling, x_0 and eps are the network's x0_hat and eps_theta. This is the code's
    :func:`ddpm_tutor.samplers.ddim`.
    """
    k = ddim_direction_coef(sigma) if direction_coef is None else direction_coef
    return sp.sqrt(sym.alpha_bar_tm1) * x0 + k * eps + sigma * noise


def ddim_keeps_the_marginals(direction_coef=None, *, strict: bool = True) -> Proof:
    """DDIM's q_sigma(x_{t-1} | x_t, x_0) leaves q(x_{t-1} | x_0) = N(sqrt(alpha_bar_{t-1}) x_0, 1 - alpha_bar_{t-1}) for every sigma_t.

    Args:
        direction_coef: claimed weight of the direction (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)
            (default: DDIM's sqrt(1 - alpha_bar_{t-1} - sigma_t^2)). A wrong one, e.g. sqrt(1 - alpha_bar_{t-1}),
            changes the variance and is rejected.
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.
    """
    k = ddim_direction_coef() if direction_coef is None else _sympify_claim(direction_coef, "direction_coef")
    ab, abp = sym.alpha_bar_t, sym.alpha_bar_tm1
    d = _Derivation(
        r"DDIM's forward process keeps DDPM's marginals, for every $\sigma_t$",
        r"x_t \sim \mathcal{N}(\sqrt{\bar{\alpha}_t}x_0, (1-\bar{\alpha}_t)I),\ "
        r"x_{t-1} \sim q_\sigma(x_{t-1} \mid x_t, x_0) \implies "
        r"x_{t-1} \sim \mathcal{N}(\sqrt{\bar{\alpha}_{t-1}}x_0, (1-\bar{\alpha}_{t-1})I)",
        "Song, Meng & Ermon 2021, eq. (7) and Lemma 1",
        strict,
    )
    direction = (sym.xt - sp.sqrt(ab) * sym.x0) / sp.sqrt(1 - ab)
    d.note(
        r"DDIM's posterior (eq. 7): a Gaussian with a free standard deviation $\sigma_t$",
        r"q_\sigma(x_{t-1} \mid x_t, x_0) = \mathcal{N}\Big(\sqrt{\bar{\alpha}_{t-1}}x_0 + "
        + _tex(k) + r"\,\frac{x_t - \sqrt{\bar{\alpha}_t}x_0}{\sqrt{1-\bar{\alpha}_t}},\ \sigma_t^2 I\Big)",
    )
    xt = q_sample_expr(sym.x0, sym.eps, ab)
    d.claim(
        r"with $x_t = \sqrt{\bar{\alpha}_t}x_0 + \sqrt{1-\bar{\alpha}_t}\,\varepsilon$ (eq. 4) the direction is the noise $\varepsilon$",
        direction.subs(sym.xt, xt), sym.eps,
        latex_str=r"\frac{x_t - \sqrt{\bar{\alpha}_t}x_0}{\sqrt{1-\bar{\alpha}_t}} = \varepsilon",
    )
    x_prev = ddim_step_expr(sym.x0, sym.eps, sigma_t, sym.z, k)  # x_{t-1} = mean + sigma_t z, z independent of eps
    mean, var = linear_gaussian_moments(x_prev, [sym.eps, sym.z])
    d.claim(
        r"so $x_{t-1}$ is a linear function of the independent $\varepsilon, z \sim \mathcal{N}(0, 1)$ with mean "
        r"$\sqrt{\bar{\alpha}_{t-1}}x_0$",
        mean, sp.sqrt(abp) * sym.x0,
        latex_str=r"\mathbb{E}[x_{t-1} \mid x_0] = \sqrt{\bar{\alpha}_{t-1}}\,x_0",
    )
    d.claim(
        r"and variance $1-\bar{\alpha}_{t-1}$, whatever $\sigma_t$: the $\sigma_t^2$ the direction gives up, the noise adds back",
        var, 1 - abp,
        latex_str=_tex(k) + r"^2 + \sigma_t^2 = 1 - \bar{\alpha}_{t-1}",
    )
    cov = sp.expand(x_prev * xt).coeff(sym.eps, 2)  # Cov(x_{t-1}, x_t | x_0): the eps^2 term of the product
    d.claim(
        r"what $\sigma_t$ does change is the joint law: the covariance of $x_{t-1}$ and $x_t$ given $x_0$",
        cov, sp.sqrt(1 - ab) * ddim_direction_coef(),
        latex_str=r"\mathrm{Cov}(x_{t-1}, x_t \mid x_0) = \sqrt{1-\bar{\alpha}_t}\sqrt{1-\bar{\alpha}_{t-1}-\sigma_t^2}",
    )
    return d.finish(sp.Tuple(mean, var), sp.Tuple(sp.sqrt(abp) * sym.x0, 1 - abp))


def ddim_eta_one_is_the_ddpm_posterior(variance=None, *, strict: bool = True) -> Proof:
    """With eta = 1, DDIM's step has the DDPM posterior's mean mu_tilde_t and variance beta_tilde_t.

    Also: with x_0 = x0_hat(x_t, eps_theta) its mean is DDPM's mu_theta of eq. (11), so DDIM with
    eta = 1 on every step is Algorithm 2 with sigma_t^2 = beta_tilde_t, and on a sub-sequence it is
    respaced ancestral sampling.

    Args:
        variance: claimed sigma_t(1)^2 (default: beta_tilde_t). beta_t, the other DDPM choice, is rejected.
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.
    """
    var_claim = posterior_variance_expr() if variance is None else _sympify_claim(variance, "variance")
    ab, abp, a, b = sym.alpha_bar_t, sym.alpha_bar_tm1, sym.alpha_t, sym.beta_t
    d = _Derivation(
        r"DDIM with $\eta = 1$ is DDPM's posterior step",
        r"\sigma_t(1)^2 = \tilde{\beta}_t,\qquad \mathbb{E}_{q_\sigma}[x_{t-1} \mid x_t, x_0] = \tilde{\mu}_t(x_t, x_0)",
        "Song, Meng & Ermon 2021, eqs. (7), (12), (16); Ho et al. 2020, eqs. (7), (11)",
        strict,
    )
    d.note(r"DDIM's choice of $\sigma_t$ (eq. 16)", r"\sigma_t(\eta) = " + _tex(ddim_sigma()))
    d.claim(
        r"at $\eta = 1$ its square is the posterior variance $\tilde{\beta}_t$ (with $\bar{\alpha}_t = \alpha_t\bar{\alpha}_{t-1}$)",
        ddim_sigma(1) ** 2, var_claim, relations=SCHEDULE_RELATIONS,
        latex_str=r"\sigma_t(1)^2 = " + _tex(var_claim),
    )
    k = sp.sqrt(a) * (1 - abp) / sp.sqrt(1 - ab)  # a product of positive numbers
    d.claim(
        r"the direction's weight squared is then $\alpha_t(1-\bar{\alpha}_{t-1})^2/(1-\bar{\alpha}_t)$, the square of a positive number",
        1 - abp - var_claim, k**2, relations=SCHEDULE_RELATIONS,
        latex_str=r"1 - \bar{\alpha}_{t-1} - \tilde{\beta}_t = \Big(" + _tex(k) + r"\Big)^2",
    )
    mean = ddim_step_expr(sym.x0, (sym.xt - sp.sqrt(ab) * sym.x0) / sp.sqrt(1 - ab), 0, 0, k)
    d.claim(
        r"so the mean of $q_\sigma$ is DDPM's $\tilde{\mu}_t(x_t, x_0)$ (eq. 7)",
        mean, posterior_mean_expr(), relations=SCHEDULE_RELATIONS,
        latex_str=r"\sqrt{\bar{\alpha}_{t-1}}x_0 + " + _tex(k) + r"\frac{x_t - \sqrt{\bar{\alpha}_t}x_0}{\sqrt{1-\bar{\alpha}_t}}"
        r" = \tilde{\mu}_t(x_t, x_0)",
    )
    step = ddim_step_expr(predict_x0_expr(sym.xt, sym.eps_theta, ab), sym.eps_theta, 0, 0, k)
    mu_theta = (sym.xt - b / sp.sqrt(1 - ab) * sym.eps_theta) / sp.sqrt(a)
    d.claim(
        r"and with the network's $\hat{x}_0$ and $\varepsilon_\theta$ it is DDPM's $\mu_\theta(x_t, t)$ (eq. 11)",
        step, mu_theta, relations=SCHEDULE_RELATIONS,
        latex_str=r"\sqrt{\bar{\alpha}_{t-1}}\hat{x}_0 + " + _tex(k) + r"\,\varepsilon_\theta = "
        r"\frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar{\alpha}_t}}\varepsilon_\theta\Big)",
    )
    # DPM-Solver++'s SDE variant, first order: x_s = (sigma_s / sigma_t) e^{-h} x_t + alpha_s (1 - e^{-2h}) x0 + sigma_s sqrt(1 - e^{-2h}) z,
    # e^{-h} = (alpha_t sigma_s) / (sigma_t alpha_s), alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar), s = t-1.
    e_mh = sp.sqrt(ab) * sp.sqrt(1 - abp) / (sp.sqrt(1 - ab) * sp.sqrt(abp))
    sde_mean = sp.sqrt(1 - abp) / sp.sqrt(1 - ab) * e_mh * sym.xt + sp.sqrt(abp) * (1 - e_mh**2) * sym.x0
    sde_var = (1 - abp) * (1 - e_mh**2)
    d.claim(
        r"DPM-Solver++ SDE's first-order step, $x_s = \frac{\sigma_s}{\sigma_t}e^{-h}x_t + \alpha_s(1-e^{-2h})\hat{x}_0"
        r" + \sigma_s\sqrt{1-e^{-2h}}\,z$, is the same step: mean $\tilde{\mu}_t$, variance $\tilde{\beta}_t$",
        sp.Tuple(sde_mean, sde_var), sp.Tuple(posterior_mean_expr(), var_claim), relations=SCHEDULE_RELATIONS,
        latex_str=r"\Big(\tfrac{\sigma_{t-1}}{\sigma_t}e^{-h}x_t + \alpha_{t-1}(1-e^{-2h})x_0,\ "
        r"\sigma_{t-1}^2(1-e^{-2h})\Big) = (\tilde{\mu}_t, \tilde{\beta}_t)",
    )
    return d.finish(ddim_sigma(1) ** 2, var_claim)


def ddim_is_an_exact_ode_step(step=None, *, strict: bool = True) -> Proof:
    """DDIM with eta = 0 is the exact solution of the probability-flow ODE over a step when eps_theta is held fixed.

    In xbar = x / sqrt(alpha_bar) and varsigma = sqrt((1 - alpha_bar) / alpha_bar) the ODE of the VP
    diffusion reads d xbar / d varsigma = eps_theta (DDIM, eq. 14), so with eps_theta constant
    xbar_{t-1} = xbar_t + (varsigma_{t-1} - varsigma_t) eps_theta: DDIM's step, and DPM-Solver++'s first-order step.

    Args:
        step: claimed DDIM step x_{t-1} in terms of ``sym.xt``, ``sym.eps_theta`` and the symbols
            ``varsigma_t``, ``varsigma_s`` of this module (default: eq. 12 with sigma_t = 0). An Euler step in
            x and sigma = sqrt(1 - alpha_bar) instead, x_t + (sigma_{t-1} - sigma_t) eps_theta, is rejected.
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.
    """
    sqrt_ab = lambda v: 1 / sp.sqrt(1 + v**2)  # noqa: E731  alpha_bar = 1 / (1 + varsigma^2)
    sqrt_1m_ab = lambda v: v / sp.sqrt(1 + v**2)  # noqa: E731
    x0_hat = (sym.xt - sqrt_1m_ab(varsigma_t) * sym.eps_theta) / sqrt_ab(varsigma_t)
    ddim = sqrt_ab(varsigma_s) * x0_hat + sqrt_1m_ab(varsigma_s) * sym.eps_theta  # eq. 12, sigma_t = 0
    claim = ddim if step is None else _sympify_claim(step, "step")
    d = _Derivation(
        r"DDIM ($\eta = 0$) is an exact step of the probability-flow ODE with $\varepsilon_\theta$ held fixed",
        r"\frac{d\bar{x}}{d\varsigma} = \varepsilon_\theta,\quad \bar{x} = \frac{x}{\sqrt{\bar{\alpha}}},\ "
        r"\varsigma = \sqrt{\frac{1-\bar{\alpha}}{\bar{\alpha}}} \implies "
        r"\bar{x}_{t-1} = \bar{x}_t + (\varsigma_{t-1} - \varsigma_t)\,\varepsilon_\theta",
        "Song, Meng & Ermon 2021, eqs. (12)-(14); Song et al. 2021 (score SDE), eq. (13); Lu et al. 2022, eq. (9)",
        strict,
    )
    tt = sp.Symbol("t", real=True)
    v = sp.Function("varsigma", positive=True)(tt)
    x = sp.Function("x")(tt)
    ab = 1 / (1 + v**2)
    f = sp.diff(ab, tt) / (2 * ab)  # drift coefficient of the VP SDE: d log sqrt(alpha_bar) / dt
    g2 = sp.diff(1 - ab, tt) - 2 * f * (1 - ab)  # g^2 = d sigma^2 / dt - 2 f sigma^2, sigma^2 = 1 - alpha_bar
    score = -sym.eps_theta / sp.sqrt(1 - ab)  # grad log p(x_t) = -eps / sqrt(1 - alpha_bar) (Ho et al. sec. 3.2)
    dx = f * x - g2 * score / 2  # probability-flow ODE: dx/dt = f x - g^2 score / 2
    d.note(
        r"the probability-flow ODE of $dx = f x\,dt + g\,dw$ with $\bar{\alpha} = 1/(1+\varsigma^2)$, "
        r"$f = \frac{d}{dt}\log\sqrt{\bar{\alpha}}$, $g^2 = \frac{d(1-\bar{\alpha})}{dt} - 2f(1-\bar{\alpha})$ "
        r"and the score $-\varepsilon_\theta/\sqrt{1-\bar{\alpha}}$",
        r"\frac{dx}{dt} = f\,x + \frac{g^2}{2}\,\frac{\varepsilon_\theta}{\sqrt{1-\bar{\alpha}}}",
    )
    d.claim(
        r"in $\bar{x} = x/\sqrt{\bar{\alpha}}$ it becomes $d\bar{x}/dt = \varepsilon_\theta\, d\varsigma/dt$: the drift cancels",
        sp.diff(x / sp.sqrt(ab), tt).subs(sp.Derivative(x, tt), dx), sym.eps_theta * sp.diff(v, tt),
        latex_str=r"\frac{d}{dt}\frac{x}{\sqrt{\bar{\alpha}}} = \varepsilon_\theta\,\frac{d\varsigma}{dt}",
    )
    flow = sym.xt / sqrt_ab(varsigma_t) + (varsigma - varsigma_t) * sym.eps_theta  # candidate xbar(varsigma)
    d.claim(
        r"with $\varepsilon_\theta$ constant, $\bar{x}(\varsigma) = \bar{x}_t + (\varsigma - \varsigma_t)\varepsilon_\theta$ "
        r"solves $d\bar{x}/d\varsigma = \varepsilon_\theta$ and starts at $\bar{x}_t$",
        sp.Tuple(sp.diff(flow, varsigma), flow.subs(varsigma, varsigma_t)), sp.Tuple(sym.eps_theta, sym.xt / sqrt_ab(varsigma_t)),
        latex_str=r"\frac{d}{d\varsigma}\big(\bar{x}_t + (\varsigma-\varsigma_t)\varepsilon_\theta\big) = \varepsilon_\theta",
    )
    d.claim(
        r"DDIM's step (eq. 12, $\sigma_t = 0$) lands exactly on that solution at $\varsigma_{t-1}$",
        claim / sqrt_ab(varsigma_s), flow.subs(varsigma, varsigma_s),
        latex_str=r"\frac{x_{t-1}}{\sqrt{\bar{\alpha}_{t-1}}} = \bar{x}_t + (\varsigma_{t-1} - \varsigma_t)\,\varepsilon_\theta",
    )
    # DPM-Solver++(1): x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) x0_hat, lambda = log(alpha / sigma) = -log varsigma
    hh = -sp.log(varsigma_s) + sp.log(varsigma_t)
    dpm1 = sqrt_1m_ab(varsigma_s) / sqrt_1m_ab(varsigma_t) * sym.xt - sqrt_ab(varsigma_s) * (sp.exp(-hh) - 1) * x0_hat
    d.claim(
        r"DPM-Solver++'s first-order step in $\lambda = \log(\alpha/\sigma) = -\log\varsigma$ is the same step",
        dpm1, claim,
        latex_str=r"\frac{\sigma_{t-1}}{\sigma_t}x_t - \alpha_{t-1}(e^{-h}-1)\hat{x}_0 = x_{t-1}^{\mathrm{DDIM}}",
    )
    return d.finish(claim / sqrt_ab(varsigma_s), flow.subs(varsigma, varsigma_s))


def dpm_solver_2m_coefficients(
    weights: Callable[[sp.Expr, sp.Expr], tuple] = second_order_weights, *, strict: bool = True
) -> Proof:
    """The correction of DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) has the weights the code uses.

    Exact solution of the ODE in data-prediction form from lambda_t to lambda_s = lambda_t + h:
    x_s = (sigma_s / sigma_t) x_t + sigma_s int e^lambda x0_hat(lambda) d lambda. 2M replaces x0_hat by
    D = w_t x0_hat_t + w_prev x0_hat_{t'} (t' the step before, lambda_t - lambda_{t'} = r h) in
    x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h}) D. The proof shows that the code's weights
    (:func:`ddpm_tutor.samplers.dpm_solver.second_order_weights`) make this agree with the exact
    integral of the line through the two estimates up to O(h^3) per step (second order), and
    that they sum to 1.

    Args:
        weights: ``weights(h, h_prev) -> (w_t, w_prev)`` to check (default: the code's). The
            plausible slip (1 + 1/r, -1/r), a full step of extrapolation, is rejected.
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.
    """
    w_t, w_prev = (sp.nsimplify(w, rational=True) for w in weights(h, r * h))  # the code computes in floats
    d = _Derivation(
        r"DPM-Solver++(2M): the second-order weights",
        r"D = \Big(1 + \frac{1}{2r}\Big)\hat{x}_0^{(t)} - \frac{1}{2r}\hat{x}_0^{(t')},\quad "
        r"x_s = \frac{\sigma_s}{\sigma_t}x_t + \alpha_s(1 - e^{-h})\,D",
        "Lu et al. 2022 (DPM-Solver++), eq. (8) and Algorithm 2",
        strict,
    )
    d.note(
        r"with $\lambda = \log(\alpha/\sigma)$ the exact solution in data-prediction form (Lu et al. eq. 8), "
        r"$\hat{x}_0$ linear in $\lambda$ through its last two values",
        r"x_s = \frac{\sigma_s}{\sigma_t}x_t + \sigma_s\int_{\lambda_t}^{\lambda_s} e^{\lambda}\hat{x}_0(\lambda)\,d\lambda,\quad "
        r"\hat{x}_0(\lambda) = \hat{x}_0^{(t)} + (\lambda - \lambda_t)\frac{\hat{x}_0^{(t)} - \hat{x}_0^{(t')}}{r h}",
    )
    lam_t = sp.Symbol("lambda_t", real=True)
    line = x0_t + (lam - lam_t) * (x0_t - x0_prev) / (r * h)
    sigma_s_e = alpha_s * sp.exp(-(lam_t + h))  # sigma_s = alpha_s e^{-lambda_s}
    exact = sp.simplify(sigma_s_e * sp.integrate(sp.exp(lam) * line, (lam, lam_t, lam_t + h)))
    exact_form = alpha_s * (1 - sp.exp(-h)) * x0_t + alpha_s * (h - 1 + sp.exp(-h)) / (r * h) * (x0_t - x0_prev)
    d.claim(
        r"the integral of the line: $\alpha_s(1-e^{-h})\hat{x}_0^{(t)}$ plus a slope term",
        exact, exact_form,
        latex_str=r"\sigma_s\int e^{\lambda}\hat{x}_0(\lambda)\,d\lambda = \alpha_s(1-e^{-h})\hat{x}_0^{(t)} + "
        r"\alpha_s\frac{h - 1 + e^{-h}}{r h}\big(\hat{x}_0^{(t)} - \hat{x}_0^{(t')}\big)",
    )
    d.claim(
        r"the weights sum to 1 (a constant $\hat{x}_0$ is integrated exactly, as in the first-order step)",
        w_t + w_prev, 1, latex_str=_tex(w_t) + " + (" + _tex(w_prev) + ") = 1",
    )
    two_m = alpha_s * (1 - sp.exp(-h)) * (w_t * x0_t + w_prev * x0_prev)
    error = sp.series(sp.expand((two_m - exact_form) / (x0_t - x0_prev)), h, 0, 3).removeO()
    d.claim(
        r"per unit of $\hat{x}_0^{(t)} - \hat{x}_0^{(t')}$ (itself $O(h)$), 2M differs from the exact integral by $O(h^2)$: "
        r"no $h^0$ or $h^1$ term, so the step's error is $O(h^3)$ and the method is second order",
        sp.Tuple(error.coeff(h, 0), error.coeff(h, 1)), sp.Tuple(0, 0),
        latex_str=r"\frac{x_s^{\mathrm{2M}} - x_s^{\mathrm{line}}}{\hat{x}_0^{(t)} - \hat{x}_0^{(t')}} = "
        + _tex(sp.simplify(error)) + r" + O(h^3)",
    )
    D0, D1 = x0_t, (x0_t - x0_prev) / r
    d.claim(
        r"diffusers writes the same step as $D_0 + \frac{1}{2}D_1$ with $D_1 = (\hat{x}_0^{(t)} - \hat{x}_0^{(t')})/r$",
        w_t * x0_t + w_prev * x0_prev, D0 + D1 / 2,
        latex_str=_tex(w_t) + r"\,\hat{x}_0^{(t)} + (" + _tex(w_prev) + r")\,\hat{x}_0^{(t')} = D_0 + \tfrac{1}{2}D_1",
    )
    return d.finish(sp.Tuple(w_t, w_prev), sp.Tuple(1 + 1 / (2 * r), -1 / (2 * r)))
