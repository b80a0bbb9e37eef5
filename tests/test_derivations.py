"""Tests of ddpm_tutor.derivations: every proof holds, every wrong variant is rejected, and the
SymPy results agree numerically with the package's schedules (float64 tensors).

Index convention: code step t = 0..T-1 is the paper's step t + 1, so for code step t the
paper's beta_t is ``betas[t]``, alpha_bar_t is ``alpha_bars[t]`` and alpha_bar_{t-1} is
``alpha_bars_prev[t]``.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch
from scipy import stats

import ddpm_tutor.derivations as D
from ddpm_tutor.derivations import ProofError, check_identity, sym
from ddpm_tutor.derivations._layout import break_lines
from ddpm_tutor.schedules import cosine_schedule, linear_schedule

S = sym
b, a, ab, abp = S.beta_t, S.alpha_t, S.alpha_bar_t, S.alpha_bar_tm1
REL = D.SCHEDULE_RELATIONS


@pytest.fixture(scope="module")
def proofs() -> dict[str, D.Proof]:
    """All proofs, computed once (SymPy is slow on a shared machine)."""
    return {f.__name__: p for f, p in zip(D.PROOFS, D.all_proofs())}


@pytest.fixture(scope="module", params=["linear", "cosine"])
def schedule(request):
    return linear_schedule() if request.param == "linear" else cosine_schedule()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# --------------------------------------------------------------------------------------
# The checker itself
# --------------------------------------------------------------------------------------
def test_check_identity_accepts_true_and_rejects_false_identities():
    p, q = sp.symbols("p q", positive=True)
    assert check_identity(sp.sqrt(p * q), sp.sqrt(p) * sp.sqrt(q))
    assert check_identity(sp.log(p * q) - sp.log(q), sp.log(p))
    assert check_identity((p + q) ** 2, p**2 + 2 * p * q + q**2)
    assert not check_identity((p + q) ** 2, p**2 + q**2)
    assert not check_identity(sp.sqrt(1 - p), 1 - p)
    # the relations are the assumptions: alpha_bar_t = alpha_t alpha_bar_{t-1}, beta_t = 1 - alpha_t
    assert check_identity(1 - ab, b + a * (1 - abp), REL)
    assert not check_identity(1 - ab, b + a * (1 - abp))  # without them it is not an identity
    assert check_identity(sp.Tuple(p, q), [p, q]) and not check_identity(sp.Tuple(p, q), [p, p])


def test_check_identity_is_symbolic_not_just_numeric():
    # without the numeric pre-check a wrong identity is still not reduced to zero
    assert not check_identity(sp.sqrt(1 - ab), 1 - ab, numeric_check=False)
    assert check_identity(D.posterior_variance_expr(), 1 / (a / b + 1 / (1 - abp)), REL, numeric_check=False)
    # x_0, x_t, eps are real, not positive: sqrt(x^2) is |x|, and the checker does not pretend otherwise
    assert not check_identity(sp.sqrt(S.x0**2), S.x0)


def test_check_identity_needs_a_symbolic_zero_not_numeric_agreement():
    # the difference is 1e-14 alpha_t: below the numeric pre-check's tolerance at every point, yet not zero
    assert not check_identity(sp.sqrt(1 - a), sp.sqrt(1 - a) + a / 10**14)
    assert not check_identity(sp.log(a), sp.log(a) + sp.Rational(1, 10**15))


def test_check_identity_rejects_bad_arguments():
    with pytest.raises(TypeError, match="relations"):
        check_identity(a, a, relations=[(a, b)])
    with pytest.raises(ValueError, match="same number"):
        check_identity(sp.Tuple(a, b), [a])


# --------------------------------------------------------------------------------------
# Every proof holds, and displays
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [f.__name__ for f in D.PROOFS])
def test_every_proof_holds_and_displays(proofs, name):
    proof = proofs[name]
    assert isinstance(proof, D.Proof)
    assert proof.holds and bool(proof) and proof.failures == ()
    assert proof.checks >= 4, "each derivation checks several equalities"
    assert sum(step.caption.startswith("✓") for step in proof.steps) == proof.checks
    md = proof._repr_markdown_()
    assert proof.name in md and break_lines(proof.statement_latex) in md and "verified by SymPy" in md
    assert md.count("$$") == 2 * (len(proof.steps) + 1)
    tex = proof._repr_latex_()
    assert tex.startswith("$$\\begin{array}") and tex.endswith("\\end{array}$$")
    assert tex.count("{") == tex.count("}")
    text = proof.as_text()
    assert text.startswith("[ok] ") and "verified by SymPy" in text.splitlines()[-1]
    assert "$" not in text and "\\frac" not in text and "\\mid" not in text


@pytest.mark.parametrize("name", [f.__name__ for f in D.PROOFS])
def test_proof_display_shows_the_statement_and_result_and_folds_the_steps(proofs, name):
    """The page shows the statement (typeset) and a one-line result; the SymPy steps are one
    click away, in a closed <details>; the plain-text repr is one line that fits the column."""
    proof = proofs[name]
    md = proof._repr_markdown_()
    head, folded = md.split("<details>\n", 1)
    assert f"$$\n{break_lines(proof.statement_latex)}\n$$" in head
    result = [line for line in head.splitlines() if "verified by SymPy" in line]
    assert result == [f"**✓ Proved:** verified by SymPy ({proof.checks} equalities checked)"]
    assert folded.startswith("<summary>") and folded.rstrip().endswith("</details>")
    assert all(break_lines(step.latex) in folded for step in proof.steps)
    assert not any(step.latex in head for step in proof.steps if len(step.latex) > 20)
    assert "\n\n$$" in folded, "blank lines let Markdown typeset the math inside <details>"
    text = repr(proof)
    assert "\n" not in text and len(text) < 80 and text.startswith("<Proof ok, ")


def test_failing_proof_display_opens_the_steps_and_names_the_failing_one():
    proof = D.posterior_by_bayes(variance=b, strict=False)
    md = proof._repr_markdown_()
    head, folded = md.split("<details open>\n", 1)
    failing = [i for i, s in enumerate(proof.steps, 1) if s.caption.startswith("✗")]
    assert f"{len(proof.failures)} of {proof.checks} checked equalities do not hold" in head
    assert f"{failing[0]}" in head.splitlines()[-2] and "marked ✗" in head
    assert repr(proof).startswith("<Proof FAILS, ") and len(repr(proof)) < 80


def test_all_proofs_in_book_order(proofs):
    names = [p.name for p in proofs.values()]
    assert len(names) == 16 == len(set(names))
    assert list(proofs) == [
        "forward_composition",
        "closed_form_reparameterisation",
        "posterior_by_bayes",
        "elbo_decomposition",
        "gaussian_kl",
        "elbo_inequality",
        "grouped_term_is_kl",
        "eps_parameterisation",
        "discretised_decoder",
        "ddim_keeps_the_marginals",
        "ddim_eta_one_is_the_ddpm_posterior",
        "ddim_is_an_exact_ode_step",
        "dpm_solver_2m_coefficients",
        "eps_score_relation",
        "bayes_for_scores",
        "guidance_conventions",
    ]


def test_non_strict_returns_a_failing_proof_that_says_so():
    proof = D.posterior_by_bayes(variance=b, strict=False)
    assert not proof.holds and not bool(proof)
    assert any("variance" in f for f in proof.failures)
    assert proof.as_text().startswith("[FAIL]") and "FAILS" in proof.as_text()
    assert "does not hold" in proof._repr_markdown_() and "**✗ FAILS:" in proof._repr_markdown_()
    assert any(step.caption.startswith("✗") for step in proof.steps)
    with pytest.raises(TypeError, match="strict"):
        D.posterior_by_bayes(strict="yes")


# --------------------------------------------------------------------------------------
# 1. Forward composition
# --------------------------------------------------------------------------------------
def test_forward_composition_result(proofs):
    proof = proofs["forward_composition"]
    mean, var = proof.lhs
    assert check_identity(mean, sp.sqrt(ab) * S.x0, REL) and check_identity(var, 1 - ab, REL)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(two_step_variance=(1 - a) + (1 - S.alpha_tm1)),  # variances added without the sqrt(alpha_t) scaling
        dict(two_step_variance=(sp.sqrt(1 - a) + sp.sqrt(1 - S.alpha_tm1)) ** 2),  # standard deviations added
        dict(marginal_variance=1 - abp),  # off by one
        dict(marginal_mean_coef=ab),  # missing square root
    ],
)
def test_forward_composition_rejects_wrong_variants(kwargs):
    with pytest.raises(ProofError):
        D.forward_composition(**kwargs)


def test_linear_gaussian_moments():
    mean, var = D.linear_gaussian_moments(3 + 2 * S.eps_1 - S.eps_2, [S.eps_1, S.eps_2])
    assert (mean, var) == (3, 5)
    with pytest.raises(ValueError, match="linear"):
        D.linear_gaussian_moments(S.eps_1**2, [S.eps_1])


# --------------------------------------------------------------------------------------
# 2. Closed form and its inverse
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(x0_formula=(S.xt - (1 - ab) * S.eps) / sp.sqrt(ab)),  # sqrt(1 - alpha_bar) replaced by (1 - alpha_bar)
        dict(x0_formula=(S.xt - sp.sqrt(1 - ab) * S.eps) / ab),
        dict(eps_formula=(S.xt - sp.sqrt(ab) * S.x0) / (1 - ab)),
    ],
)
def test_closed_form_rejects_wrong_variants(kwargs):
    with pytest.raises(ProofError):
        D.closed_form_reparameterisation(**kwargs)


def test_closed_form_builders_invert_each_other():
    xt = D.q_sample_expr()
    assert check_identity(D.predict_x0_expr().subs(S.xt, xt), S.x0)
    assert not check_identity(D.predict_x0_expr(alpha_bar=abp).subs(S.xt, xt), S.x0)


# --------------------------------------------------------------------------------------
# 3. Posterior by Bayes
# --------------------------------------------------------------------------------------
def _wrong_mean(coef_x0=None, coef_xt=None):
    c0, c1 = D.posterior_mean_coefs()
    return (c0 if coef_x0 is None else coef_x0) * S.x0 + (c1 if coef_xt is None else coef_xt) * S.xt


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(variance=b),  # beta_t in place of beta_tilde_t
        dict(variance=(1 - ab) / (1 - abp) * b),  # alpha_bar_t and alpha_bar_{t-1} swapped
        dict(mean=_wrong_mean(coef_x0=sp.sqrt(ab) * b / (1 - ab))),  # off by one in the x_0 coefficient
        dict(mean=_wrong_mean(coef_xt=a * (1 - abp) / (1 - ab))),  # alpha_t for sqrt(alpha_t)
    ],
)
def test_posterior_rejects_wrong_variants(kwargs):
    with pytest.raises(ProofError):
        D.posterior_by_bayes(**kwargs)


def test_posterior_derived_coefficients_match_the_article(proofs):
    mu, var = proofs["posterior_by_bayes"].lhs  # derived by completing the square
    c0, c1 = D.posterior_mean_coefs()
    assert check_identity([sp.diff(mu, S.x0), sp.diff(mu, S.xt), var], [c0, c1, D.posterior_variance_expr()], REL)
    assert not check_identity(var, b, REL)


# --------------------------------------------------------------------------------------
# 4. Gaussian KL
# --------------------------------------------------------------------------------------
m1, s1, m2, s2 = S.mu_1, S.sigma_1, S.mu_2, S.sigma_2
HALF = sp.Rational(1, 2)


@pytest.mark.parametrize(
    "wrong",
    [
        sp.log(s1 / s2) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - HALF,  # ratio inside the log flipped
        sp.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / s2**2 - HALF,  # missing the 2
        sp.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2),  # missing the -1/2
    ],
)
def test_gaussian_kl_rejects_wrong_variants(wrong):
    assert not check_identity(D.kl_by_integration(), wrong)
    with pytest.raises(ProofError):
        D.gaussian_kl(kl=wrong)


def test_gaussian_kl_matches_torch():
    f = sp.lambdify((m1, s1, m2, s2), D.kl_by_integration(), modules="numpy")
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    sd1 = torch.rand(50, generator=g, dtype=torch.float64) + 0.1
    sd2 = torch.rand(50, generator=g, dtype=torch.float64) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mu1, sd1), torch.distributions.Normal(mu2, sd2))
    got = torch.as_tensor(f(_np(mu1), _np(sd1), _np(mu2), _np(sd2)))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# 5. eps-parameterisation
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(weight=b**2 / (S.sigma2_t * a * (1 - ab))),  # missing the 2
        dict(weight=b**2 / (2 * S.sigma2_t * a * (1 - abp))),  # off by one
        dict(weight=b / (2 * S.sigma2_t * a * (1 - ab))),  # beta_t for beta_t^2
        dict(mean_eps=(S.xt - b / (1 - ab) * S.eps) / sp.sqrt(a)),  # sqrt(1 - alpha_bar) replaced by (1 - alpha_bar)
        dict(mean_eps=(S.xt - b / sp.sqrt(1 - ab) * S.eps) / sp.sqrt(ab)),  # sqrt(alpha_bar_t) for sqrt(alpha_t)
    ],
)
def test_eps_parameterisation_rejects_wrong_variants(kwargs):
    with pytest.raises(ProofError):
        D.eps_parameterisation(**kwargs)


def test_eps_weight_builder():
    assert D.eps_weight() == b**2 / (2 * S.sigma2_t * a * (1 - ab))
    assert D.eps_weight(sp.Rational(1, 10), sp.Rational(9, 10), sp.Rational(1, 2), sp.Rational(1, 10)) == sp.Rational(1, 9)


# --------------------------------------------------------------------------------------
# 6. ELBO decomposition
# --------------------------------------------------------------------------------------
def _no_prior_correction(E: D.ElboSymbols):
    return sp.log(E.p[1]) + sp.log(E.p_xT) - sum(sp.log(E.q_post[t]) - sp.log(E.p[t]) for t in range(2, E.T + 1))


def _kl_sum_from_t3(E: D.ElboSymbols):
    return sp.log(E.p[1]) - (sp.log(E.q_marg[E.T]) - sp.log(E.p_xT)) - sum(
        sp.log(E.q_post[t]) - sp.log(E.p[t]) for t in range(3, E.T + 1)
    )


@pytest.mark.parametrize("wrong", [_no_prior_correction, _kl_sum_from_t3])
def test_elbo_rejects_wrong_regroupings(wrong):
    with pytest.raises(ProofError):
        D.elbo_decomposition(T=3, regrouped=wrong)


def test_elbo_identity_for_more_steps_and_wrong_bayes():
    E = D.elbo_symbols(6)
    expanded = D.elbo_expanded(E)
    assert check_identity(expanded.subs(D.bayes_substitution(E)), D.elbo_regrouped(E))
    inverted = {E.q_step[t]: E.q_post[t] * E.q_marg[t - 1] / E.q_marg[t] for t in range(2, 7)}  # ratio upside down
    assert not check_identity(expanded.subs(inverted), D.elbo_regrouped(E))
    with pytest.raises(ValueError, match="T must be >= 2"):
        D.elbo_symbols(1)


def test_gaussian_bayes_identity_rejects_beta_for_beta_tilde():
    step = D.log_normal(S.xt, sp.sqrt(a) * S.x_tm1, b)
    rest = D.log_normal(S.xt, sp.sqrt(ab) * S.x0, 1 - ab) - D.log_normal(S.x_tm1, sp.sqrt(abp) * S.x0, 1 - abp)
    wrong = D.log_normal(S.x_tm1, D.posterior_mean_expr(), b) + rest
    assert not check_identity(step, wrong, REL)


# --------------------------------------------------------------------------------------
# 7. Discretised decoder
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [dict(half_width=sp.Rational(1, 256)), dict(open_edges=False)])
def test_decoder_rejects_wrong_variants(kwargs):
    with pytest.raises(ProofError):
        D.discretised_decoder(**kwargs)


def test_decoder_bins_match_torch():
    mu = torch.tensor([-1.3, -0.99, 0.0, 0.42, 1.0], dtype=torch.float64)
    sigma = 0.05
    ks = torch.arange(256, dtype=torch.float64)
    x = 2 * ks / 255 - 1
    hi = torch.where(ks == 255, torch.tensor(float("inf"), dtype=torch.float64), x + 1 / 255)
    lo = torch.where(ks == 0, torch.tensor(float("-inf"), dtype=torch.float64), x - 1 / 255)
    probs = torch.special.ndtr((hi[None] - mu[:, None]) / sigma) - torch.special.ndtr((lo[None] - mu[:, None]) / sigma)
    torch.testing.assert_close(probs.sum(1), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12)
    for k in (0, 1, 128, 254, 255):
        f = sp.lambdify((S.mu, S.sigma), D.bin_probability_expr(k), modules="mpmath")
        for i in range(5):
            assert float(f(mu[i].item(), sigma)) == pytest.approx(probs[i, k].item(), abs=1e-13)
    with pytest.raises(ValueError, match="k must be"):
        D.bin_edges(256)


# --------------------------------------------------------------------------------------
# SymPy results, lambdified, against the package's schedules
# --------------------------------------------------------------------------------------
def test_index_convention(schedule):
    # code step t is the paper's step t + 1: alpha_bars_prev[t] is alpha_bar_{t-1} of the paper
    torch.testing.assert_close(schedule.alpha_bars_prev[1:], schedule.alpha_bars[:-1], rtol=0, atol=0)
    assert schedule.alpha_bars_prev[0].item() == 1.0  # the paper's alpha_bar_0 = 1


def test_forward_composition_matches_schedule(proofs, schedule):
    mean, var = proofs["forward_composition"].lhs  # in alpha_t and alpha_bar_{t-1}
    f_var = sp.lambdify((a, abp), var, modules="numpy")
    f_coef = sp.lambdify((a, abp), sp.diff(mean, S.x0), modules="numpy")
    alphas, prev = _np(schedule.alphas), _np(schedule.alpha_bars_prev)
    torch.testing.assert_close(torch.as_tensor(f_var(alphas, prev)), 1 - schedule.alpha_bars, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(torch.as_tensor(f_coef(alphas, prev)), schedule.alpha_bars.sqrt(), rtol=1e-12, atol=0)


def test_posterior_derivation_matches_schedule(proofs, schedule):
    mu, var = proofs["posterior_by_bayes"].lhs  # -b/(2a) and -1/(2a), in beta_t, alpha_t, alpha_bar_{t-1}
    args = (b, a, abp)
    vals = (_np(schedule.betas), _np(schedule.alphas), _np(schedule.alpha_bars_prev))
    # code step 0: alpha_bar_0 = 1, so the precision 1/(1 - alpha_bar_0) is inf and the derived
    # coefficients are inf/inf there (the schedule's closed forms give 0 and 1); compare from step 1
    with np.errstate(divide="ignore", invalid="ignore"):
        got_var = sp.lambdify(args, var, modules="numpy")(*vals)
        got_c0 = sp.lambdify(args, sp.diff(mu, S.x0), modules="numpy")(*vals)
        got_c1 = sp.lambdify(args, sp.diff(mu, S.xt), modules="numpy")(*vals)
    torch.testing.assert_close(torch.as_tensor(got_var), schedule.posterior_variance, rtol=1e-10, atol=1e-18)
    torch.testing.assert_close(torch.as_tensor(got_c0)[1:], schedule.posterior_mean_coef_x0[1:], rtol=1e-10, atol=0)
    torch.testing.assert_close(torch.as_tensor(got_c1)[1:], schedule.posterior_mean_coef_xt[1:], rtol=1e-10, atol=0)
    # and the article's closed forms, lambdified, over every step
    article = sp.lambdify((b, a, ab, abp), [D.posterior_variance_expr(), *D.posterior_mean_coefs()], modules="numpy")
    v, c0, c1 = article(_np(schedule.betas), _np(schedule.alphas), _np(schedule.alpha_bars), _np(schedule.alpha_bars_prev))
    for got, want in ((v, schedule.posterior_variance), (c0, schedule.posterior_mean_coef_x0), (c1, schedule.posterior_mean_coef_xt)):
        torch.testing.assert_close(torch.as_tensor(got), want, rtol=1e-12, atol=0)
    # a wrong variant (beta_t in place of beta_tilde_t) is far off at late steps
    assert not torch.allclose(schedule.betas[1:], schedule.posterior_variance[1:], rtol=1e-3)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_eps_weight_matches_a_torch_computation(schedule, variance):
    g = torch.Generator().manual_seed(1)
    steps = torch.tensor([1, 2, 10, 250, 500, 999])  # code steps (step 0 has beta_tilde = 0)
    x0 = torch.randn(len(steps), 16, generator=g, dtype=torch.float64)
    eps, eps_theta = torch.randn_like(x0), torch.randn(x0.shape, generator=g, dtype=torch.float64)
    c = lambda v: v[steps][:, None]  # noqa: E731
    beta, alpha, alpha_bar = c(schedule.betas), c(schedule.alphas), c(schedule.alpha_bars)
    sigma2 = beta if variance == "beta" else c(schedule.posterior_variance)
    xt = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    mu_tilde = c(schedule.posterior_mean_coef_x0) * x0 + c(schedule.posterior_mean_coef_xt) * xt
    mu_theta = (xt - beta / (1 - alpha_bar).sqrt() * eps_theta) / alpha.sqrt()
    ratio = ((mu_tilde - mu_theta) ** 2).sum(1) / (2 * sigma2[:, 0]) / ((eps - eps_theta) ** 2).sum(1)
    w = sp.lambdify((b, a, ab, S.sigma2_t), D.eps_weight(), modules="numpy")
    expected = w(_np(beta[:, 0]), _np(alpha[:, 0]), _np(alpha_bar[:, 0]), _np(sigma2[:, 0]))
    torch.testing.assert_close(ratio, torch.as_tensor(expected), rtol=1e-8, atol=0)
    # the eps-form of mu_tilde agrees with the x_0-form the schedule uses
    f_mu = sp.lambdify((S.xt, S.eps, b, a, ab), D.mu_from_eps_expr(), modules="numpy")
    got = f_mu(_np(xt), _np(eps), _np(beta), _np(alpha), _np(alpha_bar))
    torch.testing.assert_close(torch.as_tensor(got), mu_tilde, rtol=1e-9, atol=1e-9)


def _exact_linear_betas(T: int = 1000) -> list[sp.Rational]:
    """beta_1..beta_T of linear_schedule() as exact rationals: 1e-4 + k (0.02 - 1e-4) / (T - 1)."""
    lo, hi = sp.Rational(1, 10_000), sp.Rational(2, 100)
    return [lo + k * (hi - lo) / (T - 1) for k in range(T)]


def test_golden_values_of_the_linear_schedule():
    schedule = linear_schedule()
    betas = _exact_linear_betas()
    with mpmath.workdps(40):
        alpha_bars, acc = [], mpmath.mpf(1)
        for beta in betas:  # alpha_bar_t = prod_{s<=t} (1 - beta_s), eq. (4)
            acc *= 1 - mpmath.mpf(beta.p) / beta.q
            alpha_bars.append(acc)
        # the paper's alpha_bar_T (code step 999)
        assert float(alpha_bars[999]) == pytest.approx(schedule.alpha_bars[999].item(), rel=1e-10)
        assert float(alpha_bars[999]) == pytest.approx(4.0358e-05, rel=1e-4)
        # beta_tilde at code step 500 = paper step 501, from the SymPy expression
        beta_tilde = sp.lambdify((b, ab, abp), D.posterior_variance_expr(), modules="mpmath")(
            mpmath.mpf(betas[500].p) / betas[500].q, alpha_bars[500], alpha_bars[499]
        )
        assert float(beta_tilde) == pytest.approx(schedule.posterior_variance[500].item(), rel=1e-10)
        assert float(beta_tilde) == pytest.approx(0.0100513, rel=1e-5)


# --------------------------------------------------------------------------------------
# The derived side of each proof, checked independently of its claim
#
# Each proof is run with a wrong claim (strict=False), and its derived side (``proof.lhs``)
# is evaluated at random parameter values and compared with a computation from the
# definitions (quadrature with mpmath, Monte Carlo with numpy, scipy's normal CDF). A proof
# whose "derived" side were a copy of its claim would carry the wrong claim here and fail.
# --------------------------------------------------------------------------------------
RNG = np.random.default_rng(20200619)


def _random_point():
    """Random schedule values with alpha_bar_{t-1} < 1 and data/noise values."""
    alpha_t, alpha_bar_tm1 = RNG.uniform(0.3, 0.95), RNG.uniform(0.2, 0.9)
    return alpha_t, alpha_bar_tm1, RNG.uniform(-1.5, 1.5), RNG.uniform(-1.5, 1.5)


def _at(expr, values: dict, relations=REL) -> float:
    """The value of ``expr`` at ``values``, after the schedule relations (alpha_bar_t = alpha_t alpha_bar_{t-1}, ...)."""
    return float(sp.sympify(expr).subs(relations or {}).subs(values).evalf(30))


def _gauss(x, mean, var):
    return mpmath.exp(-((x - mean) ** 2) / (2 * var)) / mpmath.sqrt(2 * mpmath.pi * var)


def test_forward_composition_derived_law_matches_a_simulated_chain():
    proof = D.forward_composition(marginal_variance=1 - abp, strict=False)  # wrong claim, still derived right
    assert not proof.holds
    mean, var = proof.lhs
    alphas = RNG.uniform(0.5, 0.95, size=4)
    x0, n = 0.8, 400_000
    x = np.full(n, x0)
    for alpha in alphas:  # the Markov chain itself, eq. (2): x_t = sqrt(alpha_t) x_{t-1} + sqrt(1 - alpha_t) eps
        x = np.sqrt(alpha) * x + np.sqrt(1 - alpha) * RNG.standard_normal(n)
    values = {a: alphas[-1], abp: np.prod(alphas[:-1]), S.x0: x0}
    assert _at(mean, values) == pytest.approx(x.mean(), abs=4 * x.std() / math.sqrt(n))
    assert _at(var, values) == pytest.approx(x.var(), rel=0.01)


def test_closed_form_derived_inverses_recover_x0_and_eps():
    proof = D.closed_form_reparameterisation(
        x0_formula=(S.xt - (1 - ab) * S.eps) / sp.sqrt(ab), eps_formula=(S.xt - sp.sqrt(ab) * S.x0) / (1 - ab), strict=False
    )
    assert not proof.holds
    x0_solved, eps_solved = proof.lhs
    for _ in range(3):
        alpha_bar, x0, eps = RNG.uniform(0.05, 0.95), RNG.uniform(-1, 1), RNG.standard_normal()
        xt = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * eps
        assert _at(x0_solved, {ab: alpha_bar, S.xt: xt, S.eps: eps}, None) == pytest.approx(x0, abs=1e-12)
        assert _at(eps_solved, {ab: alpha_bar, S.xt: xt, S.x0: x0}, None) == pytest.approx(eps, abs=1e-12)


def _posterior_by_quadrature(alpha_t, alpha_bar_tm1, x0, xt):
    """Mean and variance of q(x_{t-1} | x_t, x_0) proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0), by mpmath.quad."""
    with mpmath.workdps(25):
        def joint(y):
            return _gauss(xt, mpmath.sqrt(alpha_t) * y, 1 - alpha_t) * _gauss(y, mpmath.sqrt(alpha_bar_tm1) * x0, 1 - alpha_bar_tm1)

        z = mpmath.quad(joint, [-mpmath.inf, 0, mpmath.inf])
        m = mpmath.quad(lambda y: y * joint(y), [-mpmath.inf, 0, mpmath.inf]) / z
        v = mpmath.quad(lambda y: (y - m) ** 2 * joint(y), [-mpmath.inf, m, mpmath.inf]) / z
    return float(m), float(v)


def test_posterior_derived_mean_and_variance_match_bayes_by_quadrature():
    proof = D.posterior_by_bayes(variance=b, mean=_wrong_mean(coef_xt=a * (1 - abp) / (1 - ab)), strict=False)
    assert not proof.holds
    mu, var = proof.lhs
    for _ in range(3):
        alpha_t, alpha_bar_tm1, x0, xt = _random_point()
        m, v = _posterior_by_quadrature(alpha_t, alpha_bar_tm1, x0, xt)
        values = {a: alpha_t, abp: alpha_bar_tm1, S.x0: x0, S.xt: xt}
        assert _at(mu, values) == pytest.approx(m, rel=1e-9, abs=1e-12)
        assert _at(var, values) == pytest.approx(v, rel=1e-9)


def test_eps_form_of_mu_tilde_matches_bayes_by_quadrature():
    wrong = (S.xt - b / (1 - ab) * S.eps) / sp.sqrt(a)
    proof = D.eps_parameterisation(mean_eps=wrong, strict=False)
    assert not proof.holds
    mu_tilde_eps = proof.lhs[0]
    for _ in range(3):
        alpha_t, alpha_bar_tm1, x0, eps = _random_point()
        alpha_bar_t = alpha_t * alpha_bar_tm1
        xt = math.sqrt(alpha_bar_t) * x0 + math.sqrt(1 - alpha_bar_t) * eps
        m, _ = _posterior_by_quadrature(alpha_t, alpha_bar_tm1, x0, xt)
        assert _at(mu_tilde_eps, {a: alpha_t, abp: alpha_bar_tm1, S.xt: xt, S.eps: eps}) == pytest.approx(m, rel=1e-9, abs=1e-12)


def _kl_by_quadrature(mu1, sd1, mu2, sd2) -> float:
    with mpmath.workdps(25):
        def integrand(x):
            p = _gauss(x, mu1, sd1**2)
            return p * (mpmath.log(p) - mpmath.log(_gauss(x, mu2, sd2**2)))

        return float(mpmath.quad(integrand, [-mpmath.inf, mu1 - 5 * sd1, mu1, mu1 + 5 * sd1, mpmath.inf]))


def test_gaussian_kl_derived_by_integration_matches_quadrature():
    wrong = sp.log(s1 / s2) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - HALF
    proof = D.gaussian_kl(kl=wrong, strict=False)
    assert not proof.holds
    for _ in range(3):
        mu1, mu2, sd1, sd2 = RNG.uniform(-1, 1), RNG.uniform(-1, 1), RNG.uniform(0.3, 2), RNG.uniform(0.3, 2)
        want = _kl_by_quadrature(mu1, sd1, mu2, sd2)
        assert _at(proof.lhs, {m1: mu1, s1: sd1, m2: mu2, s2: sd2}) == pytest.approx(want, rel=1e-8)
        assert _at(D.kl_by_integration(), {m1: mu1, s1: sd1, m2: mu2, s2: sd2}) == pytest.approx(want, rel=1e-8)


def test_elbo_inequality_derived_gap_is_the_log_ratio_of_the_path_laws():
    proof = D.elbo_inequality(gap=lambda G: sp.log(G.p_cond / G.q_path), strict=False)  # the reversed KL
    assert not proof.holds
    G = D.gap_symbols()
    p_x0, p_cond, q_path = RNG.uniform(0.1, 3, size=3)
    got = float(proof.lhs.subs({G.p_x0: p_x0, G.p_cond: p_cond, G.q_path: q_path}))
    assert got == pytest.approx(math.log(q_path / p_cond), rel=1e-12)


def test_grouped_term_derived_expectation_matches_monte_carlo():
    wrong = sp.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2)  # missing the -1/2
    proof = D.grouped_term_is_kl(kl=wrong, strict=False)
    assert not proof.holds
    alpha_t, alpha_bar_tm1, x0, _ = _random_point()
    c, e, sigma2 = RNG.uniform(-1, 1), RNG.uniform(-0.5, 0.5), RNG.uniform(0.05, 0.5)
    beta_t, alpha_bar_t = 1 - alpha_t, alpha_t * alpha_bar_tm1
    n = 400_000
    x_tm1 = math.sqrt(alpha_bar_tm1) * x0 + math.sqrt(1 - alpha_bar_tm1) * RNG.standard_normal(n)  # the chain
    xt = math.sqrt(alpha_t) * x_tm1 + math.sqrt(beta_t) * RNG.standard_normal(n)
    var_q = (1 - alpha_bar_tm1) / (1 - alpha_bar_t) * beta_t
    mean_q = math.sqrt(alpha_bar_tm1) * beta_t / (1 - alpha_bar_t) * x0 + math.sqrt(alpha_t) * (1 - alpha_bar_tm1) / (1 - alpha_bar_t) * xt
    log_ratio = stats.norm.logpdf(x_tm1, mean_q, math.sqrt(var_q)) - stats.norm.logpdf(x_tm1, c * xt + e, math.sqrt(sigma2))
    values = {a: alpha_t, abp: alpha_bar_tm1, S.x0: x0, S.sigma2_t: sigma2, sp.Symbol("c", real=True): c, sp.Symbol("e", real=True): e}
    assert _at(proof.lhs, values) == pytest.approx(log_ratio.mean(), abs=4 * log_ratio.std() / math.sqrt(n))


def test_elbo_derived_regrouping_holds_for_real_gaussians_on_a_sampled_path():
    """The product form after the Bayes substitution, with each density symbol replaced by the value of the real
    Gaussian density at a path drawn from q, equals log p(x_{0:T}) / q(x_{1:T} | x_0) computed from the steps."""
    proof = D.elbo_decomposition(T=3, regrouped=_no_prior_correction, strict=False)
    assert not proof.holds
    E = D.elbo_symbols(3)
    alphas = RNG.uniform(0.4, 0.9, size=3)
    abars = np.cumprod(alphas)
    x = [0.3]
    for alpha in alphas:
        x.append(math.sqrt(alpha) * x[-1] + math.sqrt(1 - alpha) * RNG.standard_normal())
    model = [(RNG.uniform(0.5, 1.2), RNG.uniform(0.1, 0.5)) for _ in range(3)]  # p_theta(x_{t-1}|x_t) = N(k x_t, v)
    pdf = lambda v, mean, var: stats.norm.pdf(v, mean, math.sqrt(var))  # noqa: E731
    values = {E.p_xT: pdf(x[3], 0, 1)}
    for t in (1, 2, 3):
        k, v = model[t - 1]
        values[E.p[t]] = pdf(x[t - 1], k * x[t], v)
        values[E.q_marg[t]] = pdf(x[t], math.sqrt(abars[t - 1]) * x[0], 1 - abars[t - 1])
    for t in (2, 3):
        ab_t, ab_prev, beta = abars[t - 1], abars[t - 2], 1 - alphas[t - 1]
        mean = math.sqrt(ab_prev) * beta / (1 - ab_t) * x[0] + math.sqrt(alphas[t - 1]) * (1 - ab_prev) / (1 - ab_t) * x[t]
        values[E.q_post[t]] = pdf(x[t - 1], mean, (1 - ab_prev) / (1 - ab_t) * beta)
    direct = math.log(values[E.p_xT]) + sum(
        math.log(values[E.p[t]]) - math.log(pdf(x[t], math.sqrt(alphas[t - 1]) * x[t - 1], 1 - alphas[t - 1])) for t in (1, 2, 3)
    )
    assert float(proof.lhs.subs(values)) == pytest.approx(direct, rel=1e-10)
    assert float(proof.rhs.subs(values)) != pytest.approx(direct, rel=1e-3)  # the wrong regrouping is off


def test_decoder_derived_bin_sum_matches_scipy_without_open_edges():
    proof = D.discretised_decoder(open_edges=False, strict=False)
    assert not proof.holds
    for mu, sd in ((0.2, 0.3), (-0.9, 0.05), (1.4, 0.7)):
        edges = np.arange(256) * 2 / 255 - 1
        want = np.sum(stats.norm.cdf(edges + 1 / 255, mu, sd) - stats.norm.cdf(edges - 1 / 255, mu, sd))
        got = float(proof.lhs.subs({S.mu: mu, S.sigma: sd}).rewrite(sp.erf).evalf(30))
        assert got == pytest.approx(want, abs=1e-12) and got < 1 - 1e-6


# --------------------------------------------------------------------------------------
# The claims that only the symbolic steps can reject
# --------------------------------------------------------------------------------------
def _regrouped_sum_from_3(lp, lqm, lqp, lpT, t, T):
    return lp(1) - (lqm(T) - lpT) - sp.Sum(lqp(t) - lp(t), (t, 3, T))


def _regrouped_without_prior(lp, lqm, lqp, lpT, t, T):
    return lp(1) + lpT - sp.Sum(lqp(t) - lp(t), (t, 2, T))


@pytest.mark.parametrize("wrong", [_regrouped_sum_from_3, _regrouped_without_prior])
def test_elbo_symbolic_T_claim_rejects_wrong_regroupings(wrong):
    proof = D.elbo_decomposition(T=3, regrouped_symbolic=wrong, strict=False)  # T = 3 itself is right
    assert not proof.holds and len(proof.failures) == 1 and "any $T$" in proof.failures[0]


def test_elbo_gaussian_bayes_claim_rejects_beta_for_beta_tilde():
    proof = D.elbo_decomposition(T=3, bayes_variance=b, strict=False)
    assert not proof.holds and len(proof.failures) == 1 and "Bayes identity" in proof.failures[0]


@pytest.mark.parametrize(
    "wrong",
    [
        lambda G: sp.log(G.p_cond / G.q_path),  # KL(p || q), the other direction
        lambda G: sp.log(G.q_path / (G.p_x0 * G.p_cond)),  # the joint for the conditional
    ],
)
def test_elbo_inequality_rejects_wrong_gaps(wrong):
    with pytest.raises(ProofError):
        D.elbo_inequality(gap=wrong)


@pytest.mark.parametrize(
    "wrong",
    [
        sp.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2),  # missing the -1/2
        sp.log(s1 / s2) + (s2**2 + (m1 - m2) ** 2) / (2 * s1**2) - HALF,  # arguments swapped
    ],
)
def test_grouped_term_rejects_wrong_kls(wrong):
    with pytest.raises(ProofError):
        D.grouped_term_is_kl(kl=wrong)
