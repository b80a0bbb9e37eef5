"""The terms of the variational bound, checked against computations from their definitions.

Every expected value here is computed in the test from the schedule's betas alone, with
``math``, ``scipy.stats`` and ``torch.distributions`` (an independent Gaussian KL), never
with the package's coefficients:

* alpha_bar_t = prod_{s <= t} (1 - beta_s) (eq. 4), by a Python loop;
* q(x_{t-1} | x_t, x_0) by Bayes as a precision-weighted average (eqs. 6-7);
* p_theta(x_{t-1} | x_t) has mean mu_tilde_t(x_t, x0_hat), x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_bar_t);
* the discretised decoder as Gaussian CDF differences over the pixel bins (sec. 3.3).

Short schedules with large betas make every off-by-one in the step index visible: neighbouring
steps differ by tens of percent. Code step t = 0..T-1 is the paper's t + 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import ddpm_tutor as dt
from ddpm_tutor.losses import decoder_nll, kl_term, prior_kl, simple_loss, vlb_bits_per_dim

T = 5
BETAS = [0.05, 0.15, 0.3, 0.45, 0.6]  # paper beta_1..beta_5, far apart on purpose


@pytest.fixture(scope="module")
def schedule():
    return dt.schedules.schedule_from_betas(torch.tensor(BETAS, dtype=torch.float64))


def _alpha_bars() -> list[float]:
    """Paper alpha_bar_0..alpha_bar_T (index = paper step), alpha_bar_0 = 1 (eq. 4)."""
    out = [1.0]
    for beta in BETAS:
        out.append(out[-1] * (1.0 - beta))
    return out


AB = _alpha_bars()


def _posterior(x0, xt, n):
    """q(x_{n-1} | x_n, x_0) for paper step n >= 2 by Bayes: precisions add, means are precision-weighted."""
    beta, ab_prev = BETAS[n - 1], AB[n - 1]
    prec = (1 - beta) / beta + 1 / (1 - ab_prev)
    var = 1 / prec
    mean = var * (math.sqrt(1 - beta) / beta * xt + math.sqrt(ab_prev) / (1 - ab_prev) * x0)
    return mean, var


def _x0_hat(xt, n, eps_theta):
    """Inverse closed form at paper step n."""
    return (xt - math.sqrt(1 - AB[n]) * eps_theta) / math.sqrt(AB[n])


def _kl(mean_q, var_q, mean_p, var_p):
    """KL(N(mean_q, var_q) || N(mean_p, var_p)) summed over pixels, by torch.distributions."""
    q = torch.distributions.Normal(mean_q, torch.as_tensor(var_q, dtype=torch.float64).sqrt().expand_as(mean_q))
    p = torch.distributions.Normal(mean_p, torch.as_tensor(var_p, dtype=torch.float64).sqrt().expand_as(mean_p))
    return torch.distributions.kl_divergence(q, p).flatten(1).sum(1)


def _sigma2(n: int, variance: str) -> float:
    """sigma_n^2 of the reverse step at paper step n >= 2."""
    beta = BETAS[n - 1]
    return beta if variance == "beta" else (1 - AB[n - 1]) / (1 - AB[n]) * beta


def _grid(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).double() / 127.5 - 1


# --------------------------------------------------------------------------------------
# L_T
# --------------------------------------------------------------------------------------
def test_prior_kl_is_the_kl_of_q_xT_given_x0_from_the_standard_normal(schedule):
    x0 = _grid((3, 1, 2, 2), 0)
    ab_T = AB[T]  # the paper's alpha_bar_T: every beta enters
    expected = _kl(math.sqrt(ab_T) * x0, 1 - ab_T, torch.zeros_like(x0), 1.0)
    torch.testing.assert_close(prior_kl(schedule, x0).double(), expected, rtol=1e-10, atol=1e-12)
    # the reverse direction is a different number here (it is not symmetric)
    assert not torch.allclose(expected, _kl(torch.zeros_like(x0), 1.0, math.sqrt(ab_T) * x0, 1 - ab_T), rtol=1e-2)


# --------------------------------------------------------------------------------------
# L_{t-1}
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_kl_term_is_the_kl_of_the_posterior_from_the_reverse_step(schedule, variance):
    g = torch.Generator().manual_seed(1)
    x0 = _grid((8, 1, 3, 3), 1)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    eps_theta = eps + 0.7 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    for code_t in range(1, T):
        n = code_t + 1  # paper step
        xt = math.sqrt(AB[n]) * x0 + math.sqrt(1 - AB[n]) * eps
        mean_q, var_q = _posterior(x0, xt, n)
        mean_p, _ = _posterior(_x0_hat(xt, n, eps_theta), xt, n)  # mu_theta = mu_tilde(x_t, x0_hat)
        expected = _kl(mean_q, var_q, mean_p, _sigma2(n, variance))
        got = kl_term(schedule, x0, xt, torch.full((8,), code_t), eps_theta, variance=variance)
        torch.testing.assert_close(got.double(), expected, rtol=1e-9, atol=1e-10)
        if variance == "beta":  # the KL's direction matters once the variances differ
            reverse = _kl(mean_p, _sigma2(n, variance), mean_q, var_q)
            assert (reverse - expected).abs().max() > 1e-2


def test_kl_term_vanishes_for_the_true_noise_only_with_beta_tilde(schedule):
    x0 = _grid((4, 1, 2, 2), 2)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([1, 2, 3, 4])
    xt = dt.q_sample(schedule, x0, t, noise=eps)
    torch.testing.assert_close(kl_term(schedule, x0, xt, t, eps, "beta_tilde"), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    # with sigma^2 = beta only the variance mismatch is left: d/2 (r - 1 - log r), r = beta_tilde / beta
    r = torch.tensor([_sigma2(n, "beta_tilde") / _sigma2(n, "beta") for n in (2, 3, 4, 5)], dtype=torch.float64)
    torch.testing.assert_close(kl_term(schedule, x0, xt, t, eps, "beta"), 4 / 2 * (r - 1 - r.log()), rtol=1e-10, atol=0)


# --------------------------------------------------------------------------------------
# L_0
# --------------------------------------------------------------------------------------
def _log_bin_probability(x, mean, sd):
    """log P(bin of x) under N(mean, sd^2), elementwise; each difference of CDFs taken on the tail it is precise on."""
    upper = np.where(x > 0.999, np.inf, x + 1 / 255)
    lower = np.where(x < -0.999, -np.inf, x - 1 / 255)
    left = stats.norm.cdf(upper, mean, sd) - stats.norm.cdf(lower, mean, sd)
    right = stats.norm.sf(lower, mean, sd) - stats.norm.sf(upper, mean, sd)
    return np.log(np.where(x > mean, right, left))


def _decoder_nll_by_hand(x0, x1, eps_theta, variance):
    """-log of the product of the bin probabilities under N(x0_hat at paper step 1, sigma_1^2)."""
    mean = _x0_hat(x1, 1, eps_theta).numpy()  # at paper t = 1, mu_theta = x0_hat (alpha_bar_1 = alpha_1)
    var = BETAS[0] if variance == "beta" else (1 - AB[1]) / (1 - AB[2]) * BETAS[1]  # beta_1, or beta_tilde_2
    sd = math.sqrt(var)
    x = x0.numpy()
    return torch.as_tensor(-_log_bin_probability(x, mean, sd).reshape(x.shape[0], -1).sum(1))


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_decoder_nll_is_the_discretised_gaussian_of_paper_step_1(schedule, variance):
    g = torch.Generator().manual_seed(3)
    x0 = _grid((6, 1, 3, 3), 3)
    x0[0, 0, 0, 0], x0[0, 0, 0, 1] = -1.0, 1.0  # both open-ended bins
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x1 = math.sqrt(AB[1]) * x0 + math.sqrt(1 - AB[1]) * eps
    eps_theta = eps + 0.05 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    got = decoder_nll(schedule, x0, x1, eps_theta, variance=variance).double()
    torch.testing.assert_close(got, _decoder_nll_by_hand(x0, x1, eps_theta, variance), rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------------------
# The whole bound, in bits per dimension
# --------------------------------------------------------------------------------------
def _expected_terms_of_the_zero_model(x0: torch.Tensor, variance: str) -> tuple[np.ndarray, float]:
    """E over x_t ~ q(x_t | x_0) of each term of the bound, in nats, for eps_theta = 0; and L_T.

    L_{t-1}: mu_q - mu_p = A x_0 + B eps is linear in eps, so E KL = d/2 (log(s/v) - 1) + sum(v + E(mu_q-mu_p)^2) / (2 s).
    L_0: E over eps of -log P(bin), by 80-point Gauss-Hermite quadrature, pixel by pixel.
    """
    x = x0.flatten().numpy()
    terms = np.zeros(T)
    for n in range(2, T + 1):
        # mu_q(x_t) and mu_p(x_t) = mu_q(x_t, x0_hat(x_t, 0)) at x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, as affine maps
        s2 = _sigma2(n, variance)
        sa, sb = math.sqrt(AB[n]), math.sqrt(1 - AB[n])
        mq = lambda e: _posterior(x, sa * x + sb * e, n)[0]  # noqa: E731
        mp = lambda e: _posterior((sa * x + sb * e) / sa, sa * x + sb * e, n)[0]  # noqa: E731
        A = mq(0.0) - mp(0.0)
        B = (mq(1.0) - mp(1.0)) - A
        v = _posterior(x, x, n)[1]
        terms[n - 1] = np.sum(0.5 * (math.log(s2 / v) - 1 + (v + A**2 + B**2) / s2))
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # E f(z), z ~ N(0, 1): sum w f(z) / sqrt(2 pi)
    var1 = BETAS[0] if variance == "beta" else (1 - AB[1]) / (1 - AB[2]) * BETAS[1]
    mean = x[:, None] + math.sqrt((1 - AB[1]) / AB[1]) * nodes[None, :]  # x0_hat of x_1 with eps_theta = 0
    log_p = _log_bin_probability(np.broadcast_to(x[:, None], mean.shape), mean, math.sqrt(var1))
    terms[0] = np.sum(-log_p @ weights) / math.sqrt(2 * math.pi)
    ab_T = AB[T]
    prior = float(np.sum(0.5 * (ab_T * x**2 + (1 - ab_T) - 1 - math.log(1 - ab_T))))
    return terms, prior


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_vlb_of_the_zero_model_matches_its_expectation_in_bits(schedule, variance):
    """vlb_bits_per_dim draws x_t ~ q(x_t | x_0) itself; over many draws each term's mean is its expectation."""
    x0 = _grid((1, 1, 2, 2), 4)
    d, n = x0.numel(), 3000
    batch = x0.expand(n, -1, -1, -1).float()
    zero = lambda xt, t: torch.zeros_like(xt)  # noqa: E731
    res = vlb_bits_per_dim(zero, schedule, batch, generator=torch.Generator().manual_seed(5), variance=variance, batch_size=n * T, progress=False)
    nats_terms, nats_prior = _expected_terms_of_the_zero_model(x0.double(), variance)
    to_bits = 1 / (d * math.log(2))
    mean, se = res.terms.mean(0).numpy(), res.terms.std(0).numpy() / math.sqrt(n)
    assert np.all(np.abs(mean - nats_terms * to_bits) < 5 * se + 1e-9), (mean, nats_terms * to_bits, se)
    torch.testing.assert_close(res.prior, torch.full((n,), nats_prior * to_bits, dtype=torch.float64), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(res.decoder, res.terms[:, 0])
    torch.testing.assert_close(res.total, res.terms.sum(1) + res.prior)


# --------------------------------------------------------------------------------------
# L_simple's step sampling
# --------------------------------------------------------------------------------------
def test_simple_loss_samples_every_code_step_uniformly(schedule):
    seen = []

    def recorder(xt, t):
        seen.append(t.clone())
        return torch.zeros_like(xt)

    x0 = torch.zeros(4000, 1, 1, 1)
    simple_loss(recorder, schedule, x0, generator=torch.Generator().manual_seed(6))
    counts = torch.bincount(torch.cat(seen), minlength=T)
    assert counts.shape == (T,), "only code steps 0..T-1 exist"
    # each step's count is Binomial(4000, 1/5): mean 800, sd about 25
    assert bool((counts - 800).abs().lt(130).all()), counts.tolist()


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_vlb_of_an_oracle_is_exact_at_every_step(schedule, variance):
    """A model that knows x_0 predicts the exact noise of the x_t it is given *at the step it is given*: then
    mu_theta = mu_tilde, L_{t-1} is only the variance mismatch d/2 (r - 1 - log r), r = beta_tilde / sigma^2, and
    L_0 is the bin probability of a Gaussian centred on the pixel."""
    x0 = _grid((1, 1, 2, 2), 8).float()
    d = x0.numel()

    def oracle(xt, t):
        ab = torch.tensor([AB[int(k) + 1] for k in t], dtype=xt.dtype).view(-1, 1, 1, 1)  # paper step t + 1
        return (xt - ab.sqrt() * x0) / (1 - ab).sqrt()

    res = vlb_bits_per_dim(oracle, schedule, x0.expand(3, -1, -1, -1), generator=torch.Generator().manual_seed(9), variance=variance, progress=False)
    to_bits = 1 / (d * math.log(2))
    for n in range(2, T + 1):
        r = _sigma2(n, "beta_tilde") / _sigma2(n, variance)
        want = d / 2 * (r - 1 - math.log(r)) * to_bits
        torch.testing.assert_close(res.terms[:, n - 1], torch.full((3,), want, dtype=torch.float64), rtol=1e-4, atol=1e-6)
    var1 = BETAS[0] if variance == "beta" else (1 - AB[1]) / (1 - AB[2]) * BETAS[1]
    x = x0.double().flatten().numpy()
    want0 = -_log_bin_probability(x, x, math.sqrt(var1)).sum() * to_bits
    torch.testing.assert_close(res.decoder, torch.full((3,), want0, dtype=torch.float64), rtol=1e-4, atol=1e-6)
