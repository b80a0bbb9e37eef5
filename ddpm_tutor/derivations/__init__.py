"""Derivations as code: each identity of the book is a function that builds the SymPy
expressions, proves the identity and returns a :class:`Proof` a notebook can display.

One module per chapter, in the book's order:

========================  ===========================================  =========================
module                    proofs                                       Ho et al. 2020
========================  ===========================================  =========================
``forward``               :func:`forward_composition`,                 eqs. (2), (4)
                          :func:`closed_form_reparameterisation`
``posterior``             :func:`posterior_by_bayes`                   eqs. (6)-(7)
``elbo``                  :func:`elbo_decomposition`,                  eqs. (3), (5)
                          :func:`elbo_inequality`,
                          :func:`grouped_term_is_kl`
``kl``                    :func:`gaussian_kl`                          eq. (8)
``eps``                   :func:`eps_parameterisation`                 eqs. (10)-(12), (14)
``decoder``               :func:`discretised_decoder`                  sec. 3.3, eq. (13)
``ddim``                  :func:`ddim_keeps_the_marginals`,            Song et al. 2021 (DDIM),
                          :func:`ddim_eta_one_is_the_ddpm_posterior`,  Lu et al. 2022
                          :func:`ddim_is_an_exact_ode_step`,           (chapter 11)
                          :func:`dpm_solver_2m_coefficients`
``guidance``              :func:`eps_score_relation`,                  Ho & Salimans 2022, eq. (6)
                          :func:`bayes_for_scores`,
                          :func:`guidance_conventions`
========================  ===========================================  =========================

:mod:`ddpm_tutor.derivations.toy` is numerical, not symbolic: the exact-likelihood toy of
chapter 5 (a 1-D linear-Gaussian chain where log p_theta(x_0), the bound and its gap are exact).

Symbols follow the paper (t = 1..T): ``sym.beta_t``, ``sym.alpha_t``, ``sym.alpha_bar_t``,
``sym.alpha_bar_tm1`` (alpha_bar_{t-1}). Code step t of :mod:`ddpm_tutor.schedules` is the
paper's step t + 1, so the paper's alpha_bar_{t-1} for code step t is ``alpha_bars_prev[t]``.

Every proof function raises :class:`ProofError` (an ``AssertionError``) when a claim fails;
pass ``strict=False`` to get a :class:`Proof` with ``holds=False`` instead, e.g. to show in the
book that beta_t in place of beta_tilde_t is rejected::

    >>> from ddpm_tutor.derivations import posterior_by_bayes, sym
    >>> posterior_by_bayes(variance=sym.beta_t, strict=False).holds
    False
"""

from __future__ import annotations

from ._core import SCHEDULE_RELATIONS, Proof, ProofError, Step, check_identity, latex, log_normal, split_sums, sym
from .ddim import (
    ddim_direction_coef,
    ddim_eta_one_is_the_ddpm_posterior,
    ddim_is_an_exact_ode_step,
    ddim_keeps_the_marginals,
    ddim_sigma,
    ddim_step_expr,
    dpm_solver_2m_coefficients,
)
from .decoder import Phi, bin_centre, bin_edges, bin_probability_expr, discretised_decoder, std_normal_cdf
from .elbo import (
    ElboSymbols,
    GapSymbols,
    bayes_substitution,
    elbo_decomposition,
    elbo_expanded,
    elbo_inequality,
    elbo_regrouped,
    elbo_symbols,
    expect_standard_normal,
    gap_symbols,
    grouped_term_is_kl,
    regrouped_any_T,
)
from .eps import eps_parameterisation, eps_weight, mu_from_eps_expr
from .forward import (
    closed_form_reparameterisation,
    forward_composition,
    linear_gaussian_moments,
    predict_eps_expr,
    predict_x0_expr,
    q_sample_expr,
    standard_normal_mgf_by_integration,
)
from .guidance import GUIDANCE_NAMES, bayes_for_scores, eps_score_relation, gsym, guidance_conventions, guided_eps_expr
from .kl import gaussian_kl, gaussian_moments_by_integration, kl_by_integration, kl_normal_expr
from .posterior import (
    bayes_exponent,
    posterior_by_bayes,
    posterior_mean_coefs,
    posterior_mean_expr,
    posterior_variance_expr,
)

__all__ = [
    # result type and checker
    "Proof",
    "ProofError",
    "Step",
    "check_identity",
    "latex",
    "log_normal",
    "split_sums",
    "sym",
    "SCHEDULE_RELATIONS",
    "all_proofs",
    "PROOFS",
    # the proofs, in book order
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
    # expression builders
    "ddim_sigma",
    "ddim_direction_coef",
    "ddim_step_expr",
    "linear_gaussian_moments",
    "standard_normal_mgf_by_integration",
    "q_sample_expr",
    "predict_x0_expr",
    "predict_eps_expr",
    "posterior_variance_expr",
    "posterior_mean_coefs",
    "posterior_mean_expr",
    "bayes_exponent",
    "ElboSymbols",
    "elbo_symbols",
    "elbo_expanded",
    "elbo_regrouped",
    "bayes_substitution",
    "regrouped_any_T",
    "GapSymbols",
    "gap_symbols",
    "expect_standard_normal",
    "kl_normal_expr",
    "kl_by_integration",
    "gaussian_moments_by_integration",
    "eps_weight",
    "mu_from_eps_expr",
    "Phi",
    "std_normal_cdf",
    "bin_centre",
    "bin_edges",
    "bin_probability_expr",
    "gsym",
    "GUIDANCE_NAMES",
    "guided_eps_expr",
]

#: The proof functions in the book's order (chapters 1-2, 3, 5, 5, 5, 5, 6, 5/L_0, then 11 and 12).
PROOFS = (
    forward_composition,
    closed_form_reparameterisation,
    posterior_by_bayes,
    elbo_decomposition,
    gaussian_kl,
    elbo_inequality,
    grouped_term_is_kl,
    eps_parameterisation,
    discretised_decoder,
    ddim_keeps_the_marginals,
    ddim_eta_one_is_the_ddpm_posterior,
    ddim_is_an_exact_ode_step,
    dpm_solver_2m_coefficients,
    eps_score_relation,
    bayes_for_scores,
    guidance_conventions,
)


def all_proofs() -> list[Proof]:
    """Run every derivation with its correct formulas and return the proofs, in book order.

    Raises :class:`ProofError` if any identity fails (``python -m ddpm_tutor check`` prints
    ``proof.as_text()`` for each). Takes a few seconds (SymPy).
    """
    return [prove() for prove in PROOFS]
