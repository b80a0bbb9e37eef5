"""Tests of ddpm_tutor.derivations: every proof holds, every wrong variant is rejected, and the
SymPy results agree numerically with the package's schedules (float64 tensors).

Index convention: code step t = 0..T-1 is the paper's step t + 1, so for code step t the
paper's beta_t is ``betas[t]``, alpha_bar_t is ``alpha_bars[t]`` and alpha_bar_{t-1} is
``alpha_bars_prev[t]``.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch

import ddpm_tutor.derivations as D
from ddpm_tutor.derivations import ProofError, check_identity, sym
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
    assert proof.name in md and proof.statement_latex in md and "verified by SymPy" in md
    assert md.count("$$") == 2 * (len(proof.steps) + 1)
    tex = proof._repr_latex_()
    assert tex.startswith("$$\\begin{array}") and tex.endswith("\\end{array}$$")
    assert tex.count("{") == tex.count("}")
    text = proof.as_text()
    assert text.startswith("[ok] ") and "verified by SymPy" in text.splitlines()[-1]
    assert "$" not in text and "\\frac" not in text and "\\mid" not in text


def test_all_proofs_in_book_order(proofs):
    names = [p.name for p in proofs.values()]
    assert len(names) == 10 == len(set(names))
    assert list(proofs) == [
        "forward_composition",
        "closed_form_reparameterisation",
        "posterior_by_bayes",
        "elbo_decomposition",
        "gaussian_kl",
        "eps_parameterisation",
        "discretised_decoder",
        "eps_score_relation",
        "bayes_for_scores",
        "guidance_conventions",
    ]


def test_non_strict_returns_a_failing_proof_that_says_so():
    proof = D.posterior_by_bayes(variance=b, strict=False)
    assert not proof.holds and not bool(proof)
    assert any("variance" in f for f in proof.failures)
    assert proof.as_text().startswith("[FAIL]") and "FAILS" in proof.as_text()
    assert "does not hold" in proof._repr_markdown_() and "❌" in proof._repr_markdown_()
    assert any(step.caption.startswith("✗") for step in proof.steps)
    with pytest.raises(TypeError, match="strict"):
        D.posterior_by_bayes(strict="yes")


def test_proof_error_is_an_assertion_error():
    assert issubclass(ProofError, AssertionError)


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
