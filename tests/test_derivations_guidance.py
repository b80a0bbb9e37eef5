"""Chapter 12's proofs: each holds with the book's formula and rejects a plausible wrong variant."""

import pytest
import sympy as sp
import torch

from ddpm_tutor import derivations as D
from ddpm_tutor.derivations import ProofError, gsym, sym
from ddpm_tutor.guidance import combine

ROOT = sp.sqrt(1 - sym.alpha_bar_t)


def test_the_three_proofs_are_registered_for_check():
    names = [f.__name__ for f in D.PROOFS]
    assert names[-3:] == ["eps_score_relation", "bayes_for_scores", "guidance_conventions"]


# ----------------------------------------------------------------------------- 1. eps and the score
def test_eps_score_relation_holds_scalar_and_diagonal():
    proof = D.eps_score_relation(dims=(1, 2, 3))
    assert proof.holds and proof.checks == 6
    assert len(proof.lhs) == 3  # the last case proved: d = 3, one entry per coordinate


@pytest.mark.parametrize("factor", [-1 / ROOT, ROOT, -sp.sqrt(sym.alpha_bar_t), -(1 - sym.alpha_bar_t)])
def test_eps_score_relation_rejects_wrong_factors(factor):
    """Dividing by sqrt(1 - alpha_bar) instead of multiplying (the score = -eps / sigma confusion), a lost sign,
    sqrt(alpha_bar) for sqrt(1 - alpha_bar), a variance for a standard deviation: all rejected."""
    with pytest.raises(ProofError, match="score times the claimed factor"):
        D.eps_score_relation(factor, dims=1)
    proof = D.eps_score_relation(factor, dims=2, strict=False)
    assert not proof.holds and len(proof.failures) == 1


def test_eps_score_relation_arguments():
    with pytest.raises(ValueError, match="dims"):
        D.eps_score_relation(dims=(0,))
    with pytest.raises(TypeError, match="score_factor"):
        D.eps_score_relation(score_factor=object())


def test_eps_score_relation_numerically():
    """Monte Carlo: regressing eps on x_t for Gaussian data gives the factor times the score's slope."""
    g = torch.Generator().manual_seed(0)
    m, v, ab = 0.7, 0.3, 0.4
    x0 = m + v**0.5 * torch.randn(400_000, generator=g, dtype=torch.float64)
    eps = torch.randn(400_000, generator=g, dtype=torch.float64)
    xt = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps
    slope = torch.cov(torch.stack([eps, xt]))[0, 1] / xt.var()  # E[eps | x_t] is linear in x_t: its slope
    score_slope = -1 / (ab * v + 1 - ab)  # d/dx of the marginal's score
    assert slope.item() == pytest.approx(-((1 - ab) ** 0.5) * score_slope, rel=0.01)


# ----------------------------------------------------------------------------- 2. Bayes for scores
def test_bayes_for_scores_holds():
    proof = D.bayes_for_scores()
    assert proof.holds and proof.checks == 4


def test_bayes_for_scores_rejects_the_wrong_convention_and_exponents():
    s, ec, eu = gsym.s, gsym.eps_c, gsym.eps_u
    # (1 + s) eps_c - s eps_u tilts by p(c | x)^(1 + s), not p(c | x)^s
    proof = D.bayes_for_scores(rule=(1 + s) * ec - s * eu, strict=False)
    assert not proof.holds and any("power $s$" in f for f in proof.failures)
    with pytest.raises(ProofError):
        D.bayes_for_scores(rule=eu + s * (eu - ec))  # the difference the wrong way round
    p, r = gsym.p(gsym.x), gsym.r(gsym.x)
    cond = p * r / gsym.p_c
    with pytest.raises(ProofError, match="up to a constant"):
        D.bayes_for_scores(tilted=s * sp.log(cond) + s * sp.log(p))  # p(x|c)^s p(x)^s
    with pytest.raises(ProofError, match="up to a constant"):
        D.bayes_for_scores(tilted=(1 - s) * sp.log(cond) + s * sp.log(p))  # the exponents swapped
    # the evidence p_t(c) really is a constant: a variant that drops it is still the same density up to it
    assert D.bayes_for_scores(tilted=s * sp.log(p * r) + (1 - s) * sp.log(p)).holds


# ----------------------------------------------------------------------------- 3. the two conventions
def test_guidance_conventions_hold():
    proof = D.guidance_conventions()
    assert proof.holds and proof.checks == 4


def test_the_published_sign_slip_is_a_different_rule():
    w, ec, eu = gsym.w, gsym.eps_c, gsym.eps_u
    proof = D.guidance_conventions(rule=(1 + w) * ec + w * eu, strict=False)
    assert not proof.holds
    assert len(proof.failures) == 3  # not s = 1 + w, weights sum to 1 + 2w, and w = -1 gives -eps_u
    with pytest.raises(ProofError):
        D.guidance_conventions(rule=w * ec - (1 + w) * eu)  # the roles of eps_c and eps_u swapped


def test_the_code_uses_the_proved_rule():
    """ddpm_tutor.guidance.combine is the SymPy rule eps_u + s (eps_c - eps_u), at several scales."""
    f = sp.lambdify((gsym.eps_c, gsym.eps_u, gsym.s), D.guided_eps_expr())
    ec, eu = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    for s in (0.0, 1.0, 1.5, 3.0, 8.0):
        assert torch.allclose(combine(ec, eu, s), f(ec, eu, s))
