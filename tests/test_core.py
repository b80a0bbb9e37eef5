"""Schedules, forward process, posterior, reverse step, sampler and the bound's terms."""

import math

import pytest
import torch

import ddpm_tutor as dt


# ---------------------------------------------------------------- schedules


def test_linear_schedule_golden_values():
    s = dt.linear_schedule()
    assert s.T == 1000 and s.betas.dtype == torch.float64
    # the paper's beta_1 and beta_T sit at code steps 0 and T-1 (index convention)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    # golden values, independent of torch.cumprod: an exact product in Python floats
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    alpha_bar = math.prod(1 - b for b in betas)
    assert s.alpha_bars[-1].item() == pytest.approx(alpha_bar, rel=1e-9)
    assert s.alpha_bars[-1].item() == pytest.approx(4.0358e-05, rel=1e-4)
    abar_500, abar_499 = math.prod(1 - b for b in betas[:501]), math.prod(1 - b for b in betas[:500])
    assert s.posterior_variance[500].item() == pytest.approx((1 - abar_499) / (1 - abar_500) * betas[500], rel=1e-9)
    assert s.posterior_variance[500].item() == pytest.approx(0.0100513, rel=1e-5)


@pytest.mark.parametrize("make", [dt.linear_schedule, dt.cosine_schedule])
def test_schedule_relations(make):
    s = make(T=200)
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    torch.testing.assert_close(s.alpha_bars[1:], s.alpha_bars[:-1] * s.alphas[1:])
    assert s.alpha_bars_prev[0].item() == 1.0  # alpha_bar_0 = 1 (padded)
    torch.testing.assert_close(s.alpha_bars_prev[1:], s.alpha_bars[:-1])
    assert s.posterior_variance[0].item() == 0.0  # the paper's beta_tilde_1 = 0
    assert bool((s.posterior_variance[1:] < s.betas[1:]).all())  # beta_tilde < beta
    assert bool((s.alpha_bars[1:] < s.alpha_bars[:-1]).all())


def test_cosine_schedule_matches_its_definition():
    T, s0 = 1000, 0.008
    s = dt.cosine_schedule(T=T, s=s0)
    f = lambda t: math.cos((t / T + s0) / (1 + s0) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):  # code step t is the paper's t+1
        assert s.alpha_bars[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert s.betas.max().item() <= 0.999


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dt.linear_schedule(T=0), "T must be >= 1"),
        (lambda: dt.linear_schedule(T=2.5), "T must be an int"),
        (lambda: dt.linear_schedule(beta_T=1.5), "beta_T"),
        (lambda: dt.linear_schedule(beta_1=0.0), "beta_1"),
        (lambda: dt.cosine_schedule(max_beta=1.0), "max_beta"),
        (lambda: dt.schedule_from_betas(torch.tensor([0.1, 1.0])), r"betas must lie strictly inside \(0, 1\)"),
    ],
)
def test_schedule_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_schedule_to_returns_a_copy():
    s = dt.linear_schedule(T=10)
    moved = s.to("cpu")
    assert moved is not s and moved.betas.dtype == torch.float64
    torch.testing.assert_close(moved.alpha_bars, s.alpha_bars)


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "t, exc, match",
    [
        (10, ValueError, r"0\.\.T-1 = 0\.\.9"),
        (-1, ValueError, r"0\.\.T-1"),
        (torch.tensor([0.5, 1.0]), TypeError, "integer timesteps"),
        (torch.zeros(2, 2, dtype=torch.long), ValueError, "0-d or 1-D"),
        (torch.zeros(3, dtype=torch.long), ValueError, "batch size is 2"),
        ("3", TypeError, "t must be an int"),
    ],
)
def test_bad_t(t, exc, match):
    s = dt.linear_schedule(T=10)
    with pytest.raises(exc, match=match):
        dt.q_sample(s, torch.zeros(2, 1, 4, 4), t)


def test_shape_mismatch_and_unknown_variance():
    s = dt.linear_schedule(T=10)
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="x0 and noise|input and noise"):
        dt.q_sample(s, x, 1, noise=torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="variance must be one of"):
        dt.p_sample_step(s, x, x, 1, variance="sigma")
    with pytest.raises(ValueError, match="x0 and xt"):
        dt.q_posterior(s, x, torch.zeros(3, 1, 4, 4), 1)


# ---------------------------------------------------------------- forward process


def test_q_sample_has_the_law_of_the_closed_form():
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps: for data of unit variance, x_t keeps unit variance
    (variance preserving), regresses on x_0 with slope sqrt(alpha_bar_t), and is pure noise at the last step."""
    s = dt.linear_schedule()
    g = torch.Generator().manual_seed(0)
    n = 100_000
    x0 = torch.randn(n, dtype=torch.float64, generator=g)
    for t in (0, 250, 999):
        xt = dt.q_sample(s, x0, t, generator=g)
        slope = (xt * x0).mean() / x0.pow(2).mean()
        assert slope.item() == pytest.approx(s.alpha_bars[t].sqrt().item(), abs=0.01)
        assert xt.var().item() == pytest.approx(1.0, rel=0.02)
    # golden value at paper t = 250 (code 249): alpha_bar = prod(1 - beta) of the linear schedule, 0.5215...
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    x0, eps = torch.tensor([[0.5]], dtype=torch.float64), torch.tensor([[-1.0]], dtype=torch.float64)
    ab = math.prod(1 - b for b in betas[:250])
    assert dt.q_sample(s, x0, 249, noise=eps).item() == pytest.approx(math.sqrt(ab) * 0.5 - math.sqrt(1 - ab), rel=1e-9)


def test_iterated_q_step_matches_q_sample_in_distribution():
    """Monte Carlo: k Markov steps from x_0 have the law N(sqrt(alpha_bar) x_0, 1 - alpha_bar) of the closed form."""
    s = dt.linear_schedule(T=100, beta_1=1e-3, beta_T=0.05)  # alpha_bar_60 = 0.37: far from x_0 in few steps
    g = torch.Generator().manual_seed(0)
    n, k = 100_000, 60
    x0 = torch.full((n,), 0.7, dtype=torch.float64)
    x = x0.clone()
    for t in range(k):  # code steps 0..k-1 give the paper's x_k
        x = dt.q_step(s, x, t, generator=g)
    jump = dt.q_sample(s, x0, k - 1, generator=g)
    ab = s.alpha_bars[k - 1].item()
    for sample in (x, jump):
        assert sample.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=0.01)
        assert sample.var().item() == pytest.approx(1 - ab, rel=0.02)
    quantiles = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(x.quantile(quantiles), jump.quantile(quantiles), atol=0.02, rtol=0)


def test_q_step_off_by_one_would_be_caught():
    """Iterating k steps and jumping with alpha_bars[k-1] agree exactly when the same noise is replayed in 1-D."""
    s = dt.linear_schedule(T=50)
    x = torch.tensor([1.0], dtype=torch.float64)
    mean = x.clone()
    for t in range(20):
        mean = dt.q_step(s, mean, t, noise=torch.zeros(1, dtype=torch.float64))
    assert mean.item() == pytest.approx(s.alpha_bars[19].sqrt().item(), rel=1e-12)
    assert mean.item() != pytest.approx(s.alpha_bars[20].sqrt().item(), rel=1e-6)


# ---------------------------------------------------------------- posterior


def test_posterior_matches_an_empirical_regression():
    """1-D toy: with x_0 fixed, E[x_{t-1} | x_t] is linear in x_t; least squares recovers mu_tilde and beta_tilde."""
    s = dt.linear_schedule()
    g = torch.Generator().manual_seed(1)
    n, t, x0_value = 400_000, 2, 0.5  # code step t: x_prev is the paper's x_t, xt the paper's x_{t+1}
    x0 = torch.full((n,), x0_value, dtype=torch.float64)
    x_prev = dt.q_sample(s, x0, t - 1, generator=g)
    xt = dt.q_step(s, x_prev, t, generator=g)
    design = torch.stack([torch.ones_like(xt), xt], dim=1)
    coef = torch.linalg.lstsq(design, x_prev.unsqueeze(1)).solution.squeeze(1)
    resid_var = (x_prev - design @ coef).var().item()
    assert coef[1].item() == pytest.approx(s.posterior_mean_coef_xt[t].item(), abs=0.005)
    assert coef[0].item() == pytest.approx(s.posterior_mean_coef_x0[t].item() * x0_value, abs=0.005)
    assert resid_var == pytest.approx(s.posterior_variance[t].item(), rel=0.02)
    # the wrong variance (beta_t instead of beta_tilde_t) is rejected at this precision
    assert resid_var != pytest.approx(s.betas[t].item(), rel=0.02)
    mean, var = dt.q_posterior(s, x0[:3], xt[:3], t)
    torch.testing.assert_close(mean, coef[0] + coef[1] * xt[:3], atol=0.01, rtol=0)


def test_predict_x0_inverts_q_sample():
    s = dt.cosine_schedule()
    x0, eps = torch.rand(3, 1, 5, 5) * 2 - 1, torch.randn(3, 1, 5, 5)
    t = torch.tensor([0, 400, 900])
    torch.testing.assert_close(dt.predict_x0(s, dt.q_sample(s, x0, t, noise=eps), t, eps), x0, atol=1e-4, rtol=1e-4)


def test_posterior_at_first_step_is_x0():
    s = dt.linear_schedule()
    x0, xt = torch.randn(2, 3), torch.randn(2, 3)
    mean, var = dt.q_posterior(s, x0, xt, 0)
    torch.testing.assert_close(mean, x0)
    assert var.abs().max().item() == 0.0


# ---------------------------------------------------------------- reverse model and sampling


def test_p_mean_equals_posterior_mean_at_x0_hat():
    s = dt.linear_schedule()
    xt, eps_theta = torch.randn(4, 1, 6, 6, dtype=torch.float64), torch.randn(4, 1, 6, 6, dtype=torch.float64)
    t = torch.tensor([1, 5, 300, 999])
    x0_hat = dt.predict_x0(s, xt, t, eps_theta)
    torch.testing.assert_close(dt.p_mean(s, xt, t, eps_theta), dt.q_posterior(s, x0_hat, xt, t)[0])


def test_no_noise_at_code_step_zero():
    s = dt.linear_schedule()
    xt, eps, z = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4)
    for variance in ("beta", "beta_tilde"):
        out = dt.p_sample_step(s, eps, xt, torch.tensor([0, 1]), noise=z, variance=variance)
        torch.testing.assert_close(out.x_prev[0], out.mean[0])  # t = 0: z = 0
        sigma = dt.p_variance(s, variance)[1].sqrt().float()
        torch.testing.assert_close(out.x_prev[1], out.mean[1] + sigma * z[1])


def _oracle_for_point(schedule, x_star):
    """The exact eps_theta when the data is the single point x_star."""

    def model(xt, t):
        ab = schedule.alpha_bars.to(xt.device)[t].float().view(-1, *([1] * (xt.dim() - 1)))
        return (xt - ab.sqrt() * x_star) / (1 - ab).sqrt()

    return model


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_sample_with_an_oracle_returns_the_data_point(variance):
    s = dt.linear_schedule(T=200, beta_1=1e-3, beta_T=0.05)
    x_star = torch.tensor([0.5, -0.25, 1.0]).view(1, 3, 1, 1)
    seen = []
    out = dt.sample(
        _oracle_for_point(s, x_star), s, (4, 3, 1, 1), generator=torch.Generator().manual_seed(0),
        variance=variance, progress=False, callback=lambda t, xt, x0_hat: seen.append(t),
    )
    torch.testing.assert_close(out, x_star.expand(4, 3, 1, 1), atol=1e-4, rtol=0)
    assert seen == list(range(199, -1, -1))


def test_sample_is_reproducible_with_a_generator():
    s = dt.linear_schedule(T=20)
    model = lambda x, t: 0.1 * x  # noqa: E731
    a = dt.sample(model, s, (2, 1, 3, 3), generator=torch.Generator().manual_seed(3), progress=False)
    b = dt.sample(model, s, (2, 1, 3, 3), generator=torch.Generator().manual_seed(3), progress=False)
    c = dt.sample(model, s, (2, 1, 3, 3), generator=torch.Generator().manual_seed(4), progress=False)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_sample_in_batches_is_batch_after_batch_from_one_generator():
    """batch_size=b draws what a loop over batches of b with one generator draws (chapter 8's loop)."""
    s = dt.linear_schedule(T=20)
    model = lambda x, t: 0.1 * x  # noqa: E731
    g = torch.Generator().manual_seed(3)
    loop = torch.cat([dt.sample(model, s, (b, 1, 3, 3), generator=g, progress=False) for b in (2, 2, 1)])
    batched = dt.sample(model, s, (5, 1, 3, 3), generator=torch.Generator().manual_seed(3), progress=False, batch_size=2)
    whole = dt.sample(model, s, (5, 1, 3, 3), generator=torch.Generator().manual_seed(3), progress=False, batch_size=8)
    plain = dt.sample(model, s, (5, 1, 3, 3), generator=torch.Generator().manual_seed(3), progress=False)
    assert torch.equal(batched, loop) and torch.equal(whole, plain)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            dt.sample(model, s, (5, 1, 3, 3), progress=False, batch_size=bad)


# ---------------------------------------------------------------- losses


def test_simple_loss_is_zero_for_the_true_noise_and_one_for_zero():
    s = dt.linear_schedule()
    x0 = torch.rand(64, 1, 8, 8) * 2 - 1
    eps = torch.randn_like(x0)
    t = torch.randint(0, 1000, (64,))
    oracle = lambda xt, tt: (xt - s.alpha_bars[tt].sqrt().float().view(-1, 1, 1, 1) * x0) / (1 - s.alpha_bars[tt]).sqrt().float().view(-1, 1, 1, 1)  # noqa: E731
    assert dt.simple_loss(oracle, s, x0, t=t, noise=eps).item() == pytest.approx(0.0, abs=1e-6)
    zero = lambda xt, tt: torch.zeros_like(xt)  # noqa: E731
    assert dt.simple_loss(zero, s, x0, t=t, noise=eps).item() == pytest.approx(eps.pow(2).mean().item())
    assert dt.simple_loss(zero, s, x0, reduction="none").shape == (64,)


def test_min_snr_weights_cap_the_x0_weight_at_gamma():
    """||eps - eps_hat||^2 = SNR_t ||x0 - x0_hat||^2, so min-SNR weights turn the eps-loss into min(SNR_t, gamma) x0-losses."""
    s = dt.linear_schedule()
    t = torch.arange(0, 1000, 37)
    w = dt.losses.min_snr_weights(s, t, gamma=5.0)
    snr = s.snr()[t]
    assert torch.equal(w == 1, snr <= 5) and bool((w[snr > 5] < 1).all()) and w[0].item() == pytest.approx(5 / snr[0].item())
    x0, eps = torch.rand(t.shape[0], 1, 8, 8) * 2 - 1, torch.randn(t.shape[0], 1, 8, 8)
    eps_hat = eps + 0.1 * torch.randn_like(eps)
    xt = dt.q_sample(s, x0, t, noise=eps)
    x0_err = (x0 - dt.predict_x0(s, xt, t, eps_hat)).pow(2).flatten(1).mean(1)
    eps_err = (eps - eps_hat).pow(2).flatten(1).mean(1)
    assert (w * eps_err).tolist() == pytest.approx((snr.clamp(max=5).float() * x0_err).tolist(), rel=1e-3)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        dt.losses.min_snr_weights(s, t, gamma=0.0)


def test_kl_term_is_the_weighted_eps_error_for_beta_tilde():
    """Eq. 8 + eq. 12: with sigma^2 = beta_tilde, L_{t-1} = w_t ||eps - eps_theta||^2, w_t = beta^2 / (2 sigma^2 alpha (1 - alpha_bar))."""
    s = dt.linear_schedule()
    x0 = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 2 - 1
    eps, eps_theta = torch.randn_like(x0), torch.randn_like(x0)
    t = torch.tensor([1, 100, 900])
    xt = dt.q_sample(s, x0, t, noise=eps)
    kl = dt.kl_term(s, x0, xt, t, eps_theta, variance="beta_tilde")
    w = s.betas[t] ** 2 / (2 * s.posterior_variance[t] * s.alphas[t] * (1 - s.alpha_bars[t]))
    torch.testing.assert_close(kl, w * (eps - eps_theta).pow(2).flatten(1).sum(1))
    with pytest.raises(ValueError, match="code steps t >= 1"):
        dt.kl_term(s, x0, xt, torch.tensor([0, 1, 2]), eps_theta)


def test_prior_kl_is_small_for_the_linear_schedule():
    s = dt.linear_schedule()
    x0 = torch.ones(2, 1, 28, 28)
    nats = dt.prior_kl(s, x0)
    assert bool((nats > 0).all()) and nats.max().item() / (784 * math.log(2)) < 1e-4


def test_decoder_bins_sum_to_one():
    from ddpm_tutor.losses import discretized_gaussian_log_likelihood

    grid = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1
    for mean, var in ((0.0, 0.01), (0.99, 1e-4), (-1.3, 0.5)):
        logp = discretized_gaussian_log_likelihood(grid, torch.tensor(mean, dtype=torch.float64), torch.tensor(var, dtype=torch.float64))
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_vlb_terms_add_up():
    s = dt.linear_schedule(T=30, beta_1=1e-3, beta_T=0.2)
    x0 = torch.randint(0, 256, (2, 1, 4, 4)).float() / 127.5 - 1
    model = lambda xt, t: torch.zeros_like(xt)  # noqa: E731
    res = dt.vlb_bits_per_dim(model, s, x0, generator=torch.Generator().manual_seed(0), progress=False, batch_size=7)
    torch.testing.assert_close(res.total, res.terms.sum(1) + res.prior)
    assert res.terms.shape == (2, 30) and bool((res.terms[:, 1:] >= 0).all())
