"""The chapter-11 proofs: DDIM's marginals, eta = 1 is DDPM, eta = 0 is an ODE step, DPM-Solver++(2M)'s weights.

Each holds and rejects a plausible wrong variant; the SymPy formulas agree with the samplers' code.
"""

from __future__ import annotations

import math

import pytest
import sympy as sp

import ddpm_tutor.derivations as D
from ddpm_tutor.derivations import ProofError, sym
from ddpm_tutor.derivations import ddim as M
from ddpm_tutor.samplers import ddim_sigma as code_ddim_sigma
from ddpm_tutor.samplers import second_order_weights

PROOFS = [D.ddim_keeps_the_marginals, D.ddim_eta_one_is_the_ddpm_posterior, D.ddim_is_an_exact_ode_step,
          D.dpm_solver_2m_coefficients]


@pytest.mark.parametrize("prove", PROOFS, ids=lambda f: f.__name__)
def test_the_proof_holds_and_is_registered(prove):
    proof = prove()
    assert proof.holds and proof.checks >= 4
    assert prove in D.PROOFS


def _rejected(prove, **wrong):
    with pytest.raises(ProofError):
        prove(**wrong)
    proof = prove(strict=False, **wrong)
    assert not proof.holds and proof.failures
    return proof


def test_marginals_reject_a_direction_that_ignores_sigma():
    # keeping sqrt(1 - alpha_bar_{t-1}) on the direction while adding sigma_t z inflates the variance
    proof = _rejected(D.ddim_keeps_the_marginals, direction_coef=sp.sqrt(1 - sym.alpha_bar_tm1))
    assert any("variance" in f for f in proof.failures)
    # and the DDPM-like weight sqrt(alpha_t) fails as well
    _rejected(D.ddim_keeps_the_marginals, direction_coef=sp.sqrt(sym.alpha_t))


def test_eta_one_rejects_beta_for_beta_tilde():
    _rejected(D.ddim_eta_one_is_the_ddpm_posterior, variance=sym.beta_t)


def test_ode_step_rejects_an_euler_step_in_x_and_the_vp_sigma():
    vs_t, vs_s = M.varsigma_t, M.varsigma_s
    sigma = lambda v: v / sp.sqrt(1 + v**2)  # noqa: E731  sqrt(1 - alpha_bar)
    wrong = sym.xt + (sigma(vs_s) - sigma(vs_t)) * sym.eps_theta
    _rejected(D.ddim_is_an_exact_ode_step, step=wrong)


def test_dpm_solver_2m_rejects_a_full_step_of_extrapolation_and_equal_step_weights():
    _rejected(D.dpm_solver_2m_coefficients, weights=lambda h, h_prev: (1 + h / h_prev, -h / h_prev))
    proof = _rejected(D.dpm_solver_2m_coefficients, weights=lambda h, h_prev: (sp.Rational(3, 2), -sp.Rational(1, 2)))
    assert any("second order" in f for f in proof.failures)


def test_the_formulas_are_the_codes():
    # DDIM's sigma_t (eq. 16) as the sampler computes it
    for ab_t, ab_s, e in ((0.3, 0.5, 1.0), (0.01, 0.9, 0.4), (0.7, 0.71, 0.0)):
        expected = float(M.ddim_sigma(e, ab_t, ab_s))
        assert code_ddim_sigma(ab_t, ab_s, e) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # the 2M weights as the sampler computes them, at unequal steps
    w_t, w_prev = second_order_weights(0.3, 0.45)
    assert (w_t, w_prev) == pytest.approx((1 + 1 / 3, -1 / 3))
    assert math.isclose(w_t + w_prev, 1.0)
