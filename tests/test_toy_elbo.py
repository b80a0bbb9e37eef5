"""The exact-likelihood toy of chapter 5 (ddpm_tutor.derivations.toy), checked against quadrature,
Monte Carlo and the package's own L_simple."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats

import ddpm_tutor as dt
from ddpm_tutor.derivations import toy

BETAS = np.array([0.05, 0.2, 0.35, 0.5, 0.6])
RNG = np.random.default_rng(7)


def _random_model(T: int) -> toy.LinearGaussianReverse:
    return toy.LinearGaussianReverse(
        a=RNG.uniform(0.3, 1.5, T), c=RNG.uniform(-0.5, 0.5, T), v=RNG.uniform(0.05, 0.8, T),
        prior_mean=RNG.uniform(-0.5, 0.5), prior_var=RNG.uniform(0.5, 2.0),
    )


def test_log_likelihood_is_the_integral_of_the_joint():
    betas = BETAS[:2]
    model = _random_model(2)
    x0 = 0.4

    def pdf(x, mean, var):
        return math.exp(-((x - mean) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)

    def joint(x1, x2):  # p(x_2) p(x_1 | x_2) p(x_0 | x_1)
        return (
            pdf(x2, model.prior_mean, model.prior_var)
            * pdf(x1, model.a[1] * x2 + model.c[1], model.v[1])
            * pdf(x0, model.a[0] * x1 + model.c[0], model.v[0])
        )

    p, _ = integrate.dblquad(joint, -12, 12, -12, 12, epsabs=1e-13, epsrel=1e-10)
    assert toy.log_likelihood(model, x0) == pytest.approx(math.log(p), rel=1e-8)


def test_elbo_is_the_average_log_ratio_over_forward_paths():
    model, x0, n = _random_model(len(BETAS)), -0.3, 400_000
    path = [np.full(n, x0)]
    for beta in BETAS:  # the forward chain, eq. (2)
        path.append(math.sqrt(1 - beta) * path[-1] + math.sqrt(beta) * RNG.standard_normal(n))
    log_ratio = stats.norm.logpdf(path[-1], model.prior_mean, math.sqrt(model.prior_var))
    for t in range(1, len(BETAS) + 1):
        log_ratio += stats.norm.logpdf(path[t - 1], model.a[t - 1] * path[t] + model.c[t - 1], math.sqrt(model.v[t - 1]))
        log_ratio -= stats.norm.logpdf(path[t], math.sqrt(1 - BETAS[t - 1]) * path[t - 1], math.sqrt(BETAS[t - 1]))
    assert toy.elbo(BETAS, model, x0) == pytest.approx(log_ratio.mean(), abs=4 * log_ratio.std() / math.sqrt(n))


@pytest.mark.parametrize("T", [2, 5, 10])
def test_bound_below_log_p_with_the_gap_the_path_kl(T):
    betas = np.linspace(0.05, 0.6, T)
    for _ in range(5):
        model, x0 = _random_model(T), RNG.uniform(-2, 2)
        log_p, bound = toy.log_likelihood(model, x0), toy.elbo(betas, model, x0)
        terms = toy.elbo_terms(betas, model, x0)
        gap = toy.path_kl(betas, model, x0)
        assert bound < log_p and gap > 0
        assert log_p - bound == pytest.approx(gap, rel=1e-8, abs=1e-10)
        assert -(terms["prior"] + terms["kl"].sum() + terms["decoder"]) == pytest.approx(bound, rel=1e-10, abs=1e-10)
        assert terms["kl"].shape == (T - 1,) and np.all(terms["kl"] >= 0)


def test_the_gap_closes_for_the_true_reverse_chain():
    model = toy.true_reverse(BETAS, data_mean=0.5, data_var=0.09)
    for x0 in (-1.0, 0.2, 1.7):
        assert toy.log_likelihood(model, x0) == pytest.approx(stats.norm.logpdf(x0, 0.5, 0.3), rel=1e-12)
        assert toy.path_kl(BETAS, model, x0) == pytest.approx(0.0, abs=1e-10)
        assert toy.elbo(BETAS, model, x0) == pytest.approx(toy.log_likelihood(model, x0), abs=1e-10)
    # and for data N(0, 1) the eps-model with k = 1 is that chain (up to p(x_T) = N(0, 1), exact here)
    assert toy.path_kl(BETAS, toy.eps_model(BETAS, 1.0), 0.7) == pytest.approx(0.0, abs=1e-10)
    assert toy.path_kl(BETAS, toy.eps_model(BETAS, 0.9), 0.7) > 1e-3


def test_bound_minimiser_is_the_weighted_one_and_differs_from_l_simple():
    m, s2 = 0.5, 0.09
    neg_bound = lambda k: -toy.data_average(lambda x: toy.elbo(BETAS, toy.eps_model(BETAS, k), x), m, s2)  # noqa: E731
    res = optimize.minimize_scalar(neg_bound, bounds=(-2, 3), method="bounded", options=dict(xatol=1e-10))
    assert res.x == pytest.approx(toy.best_k_bound(BETAS, m, s2), abs=1e-6)
    assert abs(toy.best_k_bound(BETAS, m, s2) - toy.best_k_simple(BETAS, m, s2)) > 0.02
    # with equal weights the two minimisers coincide
    assert toy._k_minimiser(BETAS, 3.0 * np.ones(5), m, s2) == pytest.approx(toy.best_k_simple(BETAS, m, s2))


def test_best_k_simple_minimises_the_package_simple_loss():
    m, s2, n = 0.5, 0.09, 100_000
    schedule = dt.schedules.schedule_from_betas(torch.tensor(BETAS))
    g = torch.Generator().manual_seed(0)
    x0 = (m + math.sqrt(s2) * torch.randn(n, 1, generator=g, dtype=torch.float64))
    t = torch.arange(n) % len(BETAS)  # every step equally often
    noise = torch.randn(n, 1, generator=g, dtype=torch.float64)
    g_t = (1 - schedule.alpha_bars[t]).sqrt()[:, None]

    def loss(k):
        return dt.simple_loss(lambda xt, tt: k * g_t * xt, schedule, x0, t=t, noise=noise).item()

    res = optimize.minimize_scalar(loss, bounds=(0, 3), method="bounded")
    assert res.x == pytest.approx(toy.best_k_simple(BETAS, m, s2), abs=0.01)


def test_bad_input():
    with pytest.raises(ValueError, match="betas"):
        toy.elbo([0.1, 1.2], toy.eps_model([0.1, 0.2], 1.0), 0.0)
    with pytest.raises(ValueError, match="steps"):
        toy.elbo(BETAS, toy.eps_model(BETAS[:3], 1.0), 0.0)
    with pytest.raises(ValueError, match="variance"):
        toy.eps_model(BETAS, 1.0, variance="sigma")
    with pytest.raises(ValueError, match="data_var"):
        toy.true_reverse(BETAS, 0.0, 0.0)
