"""Chapter 5's exact-likelihood toy: a 1-D chain where log p_theta(x_0), the bound and its gap are exact.

Data x_0 ~ N(m, s^2) (or one fixed x_0), a short forward chain (Ho et al. eq. 2) and a
linear-Gaussian reverse model

    p(x_T) = N(prior_mean, prior_var),   p_theta(x_{t-1} | x_t) = N(a_t x_t + c_t, v_t),   t = 1..T,

with a plain Gaussian last step (no discretised decoder). Every path is then jointly Gaussian, so

* :func:`log_likelihood` is log p_theta(x_0) by Gaussian marginalisation;
* :func:`elbo` is E_q[log p_theta(x_{0:T}) - log q(x_{1:T} | x_0)] from the first two moments of
  the forward path and the entropy of q (eq. 3, the average of the log-ratio);
* :func:`elbo_terms` is the same bound from the KL form (eq. 5): L_T, the L_{t-1} and L_0,
  each in closed form;
* :func:`path_kl` is KL(q(x_{1:T} | x_0) || p_theta(x_{1:T} | x_0)), the gap the proof
  :func:`~ddpm_tutor.derivations.elbo_inequality` identifies, between two T-dimensional Gaussians.

The three computations share no formula, so their agreement (log p - ELBO = path KL, ELBO =
-(L_T + sum L_{t-1} + L_0)) is a check, not a restatement. All arrays are float64 numpy; index
``t - 1`` holds the paper's step t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "LinearGaussianReverse",
    "eps_model",
    "true_reverse",
    "log_likelihood",
    "elbo",
    "elbo_terms",
    "path_kl",
    "data_average",
    "eps_weights",
    "best_k_simple",
    "best_k_bound",
]


@dataclass(frozen=True)
class LinearGaussianReverse:
    """p(x_T) = N(prior_mean, prior_var), p_theta(x_{t-1} | x_t) = N(a[t-1] x_t + c[t-1], v[t-1])."""

    a: np.ndarray  #: (T,) slope of the mean of step t
    c: np.ndarray  #: (T,) intercept of the mean of step t
    v: np.ndarray  #: (T,) variance sigma_t^2 of step t
    prior_mean: float = 0.0  #: mean of p(x_T)
    prior_var: float = 1.0  #: variance of p(x_T)

    @property
    def T(self) -> int:
        return len(self.a)


def _betas(betas) -> np.ndarray:
    b = np.asarray(betas.betas if hasattr(betas, "betas") else betas, dtype=np.float64).reshape(-1)
    if b.size < 1 or not np.all((b > 0) & (b < 1)):
        raise ValueError("betas must be a non-empty sequence (or a NoiseSchedule) with every value in (0, 1)")
    return b


def _check_model(betas: np.ndarray, model: LinearGaussianReverse) -> None:
    if not isinstance(model, LinearGaussianReverse):
        raise TypeError(f"model must be a LinearGaussianReverse, got {type(model).__name__}")
    if model.T != len(betas) or len(model.c) != len(betas) or len(model.v) != len(betas):
        raise ValueError(f"the model has {model.T} steps but the schedule has {len(betas)}: a, c, v need one entry per step")
    if not (np.all(np.asarray(model.v) > 0) and model.prior_var > 0):
        raise ValueError("the model's variances v and prior_var must be > 0")


def eps_model(betas, k: float, variance: str = "beta") -> LinearGaussianReverse:
    """The eps-parameterised model with eps_theta(x_t, t) = k sqrt(1 - alpha_bar_t) x_t (eq. 11).

    mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t) = (1 - k beta_t) x_t / sqrt(alpha_t);
    sigma_t^2 = beta_t (``"beta"``) or beta_tilde_t (``"beta_tilde"``, with beta_tilde_2 at t = 1, whose own is 0).
    For data N(0, 1), k = 1 is the exact reverse process.
    """
    b = _betas(betas)
    alphas, abars = 1 - b, np.cumprod(1 - b)
    if variance == "beta":
        v = b.copy()
    elif variance == "beta_tilde":
        if len(b) < 2:
            raise ValueError("the beta_tilde variance needs T >= 2 (step 1 uses beta_tilde_2)")
        abars_prev = np.concatenate([[1.0], abars[:-1]])
        v = (1 - abars_prev) / (1 - abars) * b
        v[0] = v[1]
    else:
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    return LinearGaussianReverse(a=(1 - k * b) / np.sqrt(alphas), c=np.zeros_like(b), v=v)


def true_reverse(betas, data_mean: float, data_var: float) -> LinearGaussianReverse:
    """The forward chain run backwards, q(x_{t-1} | x_t), for data x_0 ~ N(data_mean, data_var), and p(x_T) = q(x_T).

    q(x_t) = N(sqrt(alpha_bar_t) m, alpha_bar_t s^2 + 1 - alpha_bar_t) =: N(M_t, V_t), Cov(x_{t-1}, x_t) = sqrt(alpha_t) V_{t-1},
    so q(x_{t-1} | x_t) = N(M_{t-1} + a_t (x_t - M_t), V_{t-1} - a_t sqrt(alpha_t) V_{t-1}), a_t = sqrt(alpha_t) V_{t-1} / V_t.
    With it the model's joint is q's joint, and the bound is tight for every x_0.
    """
    if not data_var > 0:
        raise ValueError(f"data_var must be > 0, got {data_var}")
    b = _betas(betas)
    alphas = 1 - b
    abars = np.concatenate([[1.0], np.cumprod(alphas)])  # alpha_bar_0..alpha_bar_T
    M = np.sqrt(abars) * data_mean
    V = abars * data_var + 1 - abars
    a = np.sqrt(alphas) * V[:-1] / V[1:]
    return LinearGaussianReverse(
        a=a, c=M[:-1] - a * M[1:], v=V[:-1] - a * np.sqrt(alphas) * V[:-1], prior_mean=float(M[-1]), prior_var=float(V[-1])
    )


def _model_joint(model: LinearGaussianReverse) -> tuple[np.ndarray, np.ndarray]:
    """Mean (T+1,) and covariance (T+1, T+1) of (x_0, ..., x_T) under the model, by ancestral sampling's linear map."""
    T = model.T
    mean = np.zeros(T + 1)
    B = np.zeros((T + 1, T + 1))  # x = mean + B n, n ~ N(0, I_{T+1})
    mean[T], B[T, T] = model.prior_mean, math.sqrt(model.prior_var)
    for t in range(T, 0, -1):  # x_{t-1} = a_t x_t + c_t + sqrt(v_t) n_{t-1}
        mean[t - 1] = model.a[t - 1] * mean[t] + model.c[t - 1]
        B[t - 1] = model.a[t - 1] * B[t]
        B[t - 1, t - 1] += math.sqrt(model.v[t - 1])
    return mean, B @ B.T


def _forward_path(betas: np.ndarray, x0: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean (T,) and covariance (T, T) of x_{1:T} given x_0 under the forward chain (eq. 2).

    E[x_t] = sqrt(alpha_bar_t) x_0 and, for s <= t, Cov(x_s, x_t) = sqrt(alpha_bar_t / alpha_bar_s) (1 - alpha_bar_s).
    """
    abars = np.cumprod(1 - betas)
    s_idx, t_idx = np.meshgrid(np.arange(len(betas)), np.arange(len(betas)), indexing="ij")
    lo, hi = np.minimum(s_idx, t_idx), np.maximum(s_idx, t_idx)
    cov = np.sqrt(abars[hi] / abars[lo]) * (1 - abars[lo])
    return np.sqrt(abars) * x0, cov


def log_likelihood(model: LinearGaussianReverse, x0: float) -> float:
    """log p_theta(x_0): x_0's marginal under the model is Gaussian (linear-Gaussian chain)."""
    mean, cov = _model_joint(model)
    return float(-0.5 * (math.log(2 * math.pi * cov[0, 0]) + (x0 - mean[0]) ** 2 / cov[0, 0]))


def _log_normal_expected(mean_diff: float, var_diff: float, var: float) -> float:
    """E[log N(X; 0, var)] for X with mean mean_diff and variance var_diff."""
    return -0.5 * (math.log(2 * math.pi * var) + (mean_diff**2 + var_diff) / var)


def elbo(betas, model: LinearGaussianReverse, x0: float) -> float:
    """L_VLB = E_{q(x_{1:T}|x_0)}[log p_theta(x_{0:T}) - log q(x_{1:T} | x_0)] (eq. 3), exactly.

    E_q[log p_theta(x_{0:T})] is a sum of expected Gaussian log-densities of the path's linear
    combinations (means and covariances of :func:`_forward_path`); -E_q[log q] is q's entropy,
    (1/2) log det(2 pi e Cov).
    """
    b = _betas(betas)
    _check_model(b, model)
    m, C = _forward_path(b, x0)
    mean = np.concatenate([[x0], m])  # x_0..x_T
    cov = np.zeros((len(b) + 1, len(b) + 1))
    cov[1:, 1:] = C  # x_0 is fixed
    T = len(b)
    total = _log_normal_expected(mean[T] - model.prior_mean, cov[T, T], model.prior_var)
    for t in range(1, T + 1):  # x_{t-1} - a_t x_t - c_t
        a = model.a[t - 1]
        d_mean = mean[t - 1] - a * mean[t] - model.c[t - 1]
        d_var = cov[t - 1, t - 1] + a**2 * cov[t, t] - 2 * a * cov[t - 1, t]
        total += _log_normal_expected(d_mean, d_var, model.v[t - 1])
    _, logdet = np.linalg.slogdet(2 * math.pi * math.e * C)
    return float(total + 0.5 * logdet)


def _kl(m1: float, v1: float, m2: float, v2: float) -> float:
    return 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)


def elbo_terms(betas, model: LinearGaussianReverse, x0: float) -> dict:
    """The bound in its KL form (eq. 5), each term exact: ``{"prior": L_T, "kl": (L_1..L_{T-1}), "decoder": L_0}``.

    L_T = KL(q(x_T | x_0) || p(x_T)); L_{t-1} = E_{q(x_t|x_0)} KL(N(mu_tilde_t, beta_tilde_t) || N(a_t x_t + c_t, v_t))
    for t = 2..T (the mean gap is linear in x_t, so its square's expectation is closed form);
    L_0 = -E_{q(x_1|x_0)} log N(x_0; a_1 x_1 + c_1, v_1). The ELBO is ``-(prior + sum(kl) + decoder)``.
    """
    b = _betas(betas)
    _check_model(b, model)
    T = len(b)
    alphas, abars = 1 - b, np.cumprod(1 - b)
    prior = _kl(math.sqrt(abars[-1]) * x0, 1 - abars[-1], model.prior_mean, model.prior_var)
    kls = []
    for t in range(2, T + 1):
        ab_t, ab_prev, beta = abars[t - 1], abars[t - 2], b[t - 1]
        beta_tilde = (1 - ab_prev) / (1 - ab_t) * beta
        coef_x0 = math.sqrt(ab_prev) * beta / (1 - ab_t)
        coef_xt = math.sqrt(alphas[t - 1]) * (1 - ab_prev) / (1 - ab_t)
        # mu_tilde - mu_theta = (coef_x0 x_0 - c) + (coef_xt - a) x_t, x_t ~ N(sqrt(ab_t) x_0, 1 - ab_t)
        slope = coef_xt - model.a[t - 1]
        d_mean = coef_x0 * x0 - model.c[t - 1] + slope * math.sqrt(ab_t) * x0
        d_sq = d_mean**2 + slope**2 * (1 - ab_t)
        v = model.v[t - 1]
        kls.append(0.5 * (math.log(v / beta_tilde) + (beta_tilde + d_sq) / v - 1))
    a1, c1, v1 = model.a[0], model.c[0], model.v[0]
    d_mean = x0 - a1 * math.sqrt(abars[0]) * x0 - c1
    decoder = -_log_normal_expected(d_mean, a1**2 * (1 - abars[0]), v1)
    return {"prior": prior, "kl": np.array(kls), "decoder": decoder}


def path_kl(betas, model: LinearGaussianReverse, x0: float) -> float:
    """KL(q(x_{1:T} | x_0) || p_theta(x_{1:T} | x_0)) between two T-dimensional Gaussians.

    p_theta(x_{1:T} | x_0) conditions the model's joint on x_0 (Gaussian conditioning); the KL is
    (1/2)[tr(S_p^-1 S_q) + (m_p - m_q)' S_p^-1 (m_p - m_q) - T + log det S_p - log det S_q].
    """
    b = _betas(betas)
    _check_model(b, model)
    mean, cov = _model_joint(model)
    gain = cov[1:, 0] / cov[0, 0]
    m_p = mean[1:] + gain * (x0 - mean[0])
    S_p = cov[1:, 1:] - np.outer(gain, cov[0, 1:])
    m_q, S_q = _forward_path(b, x0)
    diff = m_p - m_q
    solve = np.linalg.solve(S_p, np.column_stack([S_q, diff]))
    _, logdet_p = np.linalg.slogdet(S_p)
    _, logdet_q = np.linalg.slogdet(S_q)
    return float(0.5 * (np.trace(solve[:, :-1]) + diff @ solve[:, -1] - len(b) + logdet_p - logdet_q))


def data_average(f: Callable[[float], float], data_mean: float, data_var: float, nodes: int = 12) -> float:
    """E_{x_0 ~ N(data_mean, data_var)} f(x_0) by Gauss-Hermite quadrature (exact for polynomials of degree < 2 nodes).

    Every quantity of this module is a quadratic in x_0, so a few nodes give it exactly.
    """
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    return float(sum(wi * f(data_mean + math.sqrt(data_var) * zi) for zi, wi in zip(z, w)) / math.sqrt(2 * math.pi))


def eps_weights(betas, variance: str = "beta") -> np.ndarray:
    """w_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) of eq. (12), t = 1..T, for the variances of :func:`eps_model`."""
    b = _betas(betas)
    v = eps_model(b, 0.0, variance).v
    return b**2 / (2 * v * (1 - b) * (1 - np.cumprod(1 - b)))


def _k_minimiser(betas, weights: np.ndarray, data_mean: float, data_var: float) -> float:
    # E(eps - k g x_t)^2 = 1 - 2 k g^2 + k^2 g^2 (alpha_bar (s^2 + m^2) + g^2), g = sqrt(1 - alpha_bar_t)
    abars = np.cumprod(1 - _betas(betas))
    g2 = 1 - abars
    second = abars * (data_var + data_mean**2) + g2
    return float(np.sum(weights * g2) / np.sum(weights * g2 * second))


def best_k_simple(betas, data_mean: float, data_var: float) -> float:
    """argmin_k of L_simple = mean_t E||eps - k sqrt(1 - alpha_bar_t) x_t||^2 (eq. 14: every step weighted 1)."""
    return _k_minimiser(betas, np.ones(len(_betas(betas))), data_mean, data_var)


def best_k_bound(betas, data_mean: float, data_var: float, variance: str = "beta") -> float:
    """argmin_k of the bound: the same squared errors weighted by w_t (eq. 12), the k-free constants dropped."""
    return _k_minimiser(betas, eps_weights(betas, variance), data_mean, data_var)
