"""Training objectives: L_simple and every term of the variational bound.

Chapters 5-6 of the book. With L = L_T + sum_{t=2}^{T} L_{t-1} + L_0 (Ho et al. eq. 5):

* :func:`prior_kl` is L_T = KL(q(x_T | x_0) || N(0, I));
* :func:`kl_term` is L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)), paper t >= 2 (code t >= 1);
* :func:`decoder_nll` is L_0 = -log p_theta(x_0 | x_1), the discretised Gaussian decoder (sec. 3.3);
* :func:`vlb_bits_per_dim` adds them up and reports bits per dimension;
* :func:`simple_loss` is L_simple = E ||eps - eps_theta(x_t, t)||^2 (eq. 14);
* :func:`min_snr_weights` re-weights it per t (min-SNR-gamma, Hang et al. 2023), an option of training.

All KL and NLL values are in nats, summed over the non-batch dimensions, shape ``(B,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from ._tensor import (check_choice, check_finite, check_float_data, check_model_T, check_model_output, check_same_shape,
                      check_t, extract)
from .forward import _noise_like, q_sample
from .posterior import q_posterior
from .reverse import VARIANCES, p_mean, p_variance
from .schedules import NoiseSchedule

__all__ = [
    "simple_loss",
    "min_snr_weights",
    "normal_kl",
    "prior_kl",
    "kl_term",
    "decoder_variance",
    "discretized_gaussian_log_likelihood",
    "decoder_nll",
    "vlb_bits_per_dim",
    "VLBResult",
]

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _sum_dims(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(dim=1)


def simple_loss(
    model: Model,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor | int | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """L_simple (Ho et al. eq. 14; Algorithm 1): || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t) ||^2.

    Args:
        model: ``model(xt, t) -> eps_hat``.
        x0: ``(B, C, H, W)`` clean data in [-1, 1].
        t: code steps, int64 ``(B,)``; drawn uniformly from 0..T-1 when None.
        noise: eps, same shape as ``x0``; drawn from N(0, I) when None.
        generator: optional generator for ``t`` and ``noise``.
        reduction: ``"mean"`` (a scalar: the mean over batch and pixels) or ``"none"``
            (``(B,)``: each sample's mean squared error over its pixels, for loss-by-t plots).
    """
    check_choice(reduction, ("mean", "none"), "reduction")
    check_model_T(model, schedule.T)
    if t is None:
        gen_device = generator.device if generator is not None else x0.device
        t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator, device=gen_device).to(x0.device)
    t = check_t(t, schedule.T, batch=x0.shape[0]).to(x0.device)
    eps = _noise_like(x0, noise, generator)
    xt = q_sample(schedule, x0, t, noise=eps)
    eps_theta = check_model_output(model(xt, t), xt)
    per_sample = (eps - eps_theta.float()).pow(2).flatten(1).mean(dim=1)
    return per_sample.mean() if reduction == "mean" else per_sample


def min_snr_weights(schedule: NoiseSchedule, t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-gamma weights for the eps-loss (Hang et al. 2023): min(SNR_t, gamma) / SNR_t, shape ``(B,)``.

    The eps-loss of step t equals SNR_t times the x_0-loss, so L_simple gives the nearly noise-free steps
    (SNR in the thousands at paper t = 1) the largest losses and gradients, though an error there barely
    moves x_0. These weights cap the x_0-weight at gamma: steps with SNR_t <= gamma keep weight 1 (as in
    L_simple), cleaner steps are scaled down to gamma / SNR_t. ``t`` holds code steps 0..T-1.
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0 (Hang et al. use 5), got {gamma}")
    t = check_t(t, schedule.T)
    snr = schedule.snr().to(t.device)[t].to(torch.float32)  # (B,); float64 in the schedule, so 1 - alpha_bar stays exact
    return snr.clamp(max=gamma) / snr


def normal_kl(mean1: torch.Tensor, var1: torch.Tensor, mean2: torch.Tensor, var2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, var1) || N(mean2, var2)) in nats (all arguments broadcast):

        log(sigma2 / sigma1) + (var1 + (mean1 - mean2)^2) / (2 var2) - 1/2
    """
    var1 = torch.as_tensor(var1, dtype=mean1.dtype, device=mean1.device)
    var2 = torch.as_tensor(var2, dtype=mean1.dtype, device=mean1.device)
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def prior_kl(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) in nats, shape ``(B,)``. It has no parameters: near 0 for a good schedule."""
    t = torch.full((x0.shape[0],), schedule.T - 1, dtype=torch.long, device=x0.device)
    mean = extract(schedule.alpha_bars.sqrt(), t, x0) * x0
    var = extract(1.0 - schedule.alpha_bars, t, x0)
    return _sum_dims(normal_kl(mean, var.expand_as(mean), torch.zeros_like(mean), torch.ones_like(mean)))


def kl_term(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    xt: torch.Tensor,
    t: torch.Tensor | int,
    eps_theta: torch.Tensor,
    variance: str = "beta_tilde",
) -> torch.Tensor:
    """L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) in nats, shape ``(B,)`` (eq. 5).

    Defined for the paper's t >= 2, i.e. code steps ``t >= 1`` (code step 0 is the decoder L_0).
    With sigma_t^2 fixed this is ||mu_tilde - mu_theta||^2 / (2 sigma_t^2) plus a constant that
    vanishes when sigma_t^2 = beta_tilde_t (eq. 8).
    """
    check_choice(variance, VARIANCES, "variance")
    t = check_t(t, schedule.T, batch=xt.shape[0])
    if (t == 0).any():
        raise ValueError("kl_term needs code steps t >= 1 (the paper's t >= 2); code step 0 is the decoder term, use decoder_nll")
    mean_q, var_q = q_posterior(schedule, x0, xt, t)
    mean_p = p_mean(schedule, xt, t, eps_theta)
    var_p = extract(p_variance(schedule, variance), t, xt)
    return _sum_dims(normal_kl(mean_q, var_q.expand_as(mean_q), mean_p, var_p.expand_as(mean_p)))


def decoder_variance(schedule: NoiseSchedule, variance: str = "beta_tilde") -> torch.Tensor:
    """sigma_1^2 used by the decoder p_theta(x_0 | x_1), a 0-d float64 tensor.

    ``"beta"``: beta_1. ``"beta_tilde"``: beta_tilde_1 is exactly 0 (the posterior at the paper's
    t = 1 is a point mass), which would make the decoder degenerate, so it is replaced by
    beta_tilde_2, as the reference DDPM implementation does ("posterior_log_variance_clipped").
    """
    check_choice(variance, VARIANCES, "variance")
    if variance == "beta":
        return schedule.betas[0]
    if schedule.T < 2:
        raise ValueError("the beta_tilde decoder variance needs T >= 2 (it uses beta_tilde_2)")
    return schedule.posterior_variance[1]


def discretized_gaussian_log_likelihood(x0: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Elementwise log-probability of the 8-bit bin that contains ``x0`` under N(mean, var) (DDPM sec. 3.3).

    Pixels ``k = 0..255`` sit at x = 2k/255 - 1; the bin of x is [x - 1/255, x + 1/255], except that
    the first bin extends to -inf and the last to +inf, so the 256 probabilities sum to 1:

        p(x) = Phi((x + 1/255 - mean) / sigma) - Phi((x - 1/255 - mean) / sigma)

    Args:
        x0: data on the 256-level grid in [-1, 1].
        mean, var: the decoder's mean and variance (broadcast against ``x0``).
    """
    var = torch.as_tensor(var, dtype=mean.dtype, device=mean.device)
    inv_sigma = torch.rsqrt(var)
    upper = torch.where(x0 > 1 - 1e-3, torch.ones_like(x0), torch.special.ndtr((x0 + 1 / 255 - mean) * inv_sigma))
    lower = torch.where(x0 < -1 + 1e-3, torch.zeros_like(x0), torch.special.ndtr((x0 - 1 / 255 - mean) * inv_sigma))
    # log(upper - lower), computed on whichever tail keeps precision
    log_cdf_upper = torch.special.log_ndtr((x0 + 1 / 255 - mean) * inv_sigma)
    log_sf_lower = torch.special.log_ndtr(-(x0 - 1 / 255 - mean) * inv_sigma)
    log_mid = torch.log((upper - lower).clamp(min=1e-12))
    return torch.where(x0 < -1 + 1e-3, log_cdf_upper, torch.where(x0 > 1 - 1e-3, log_sf_lower, log_mid))


def decoder_nll(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    x1: torch.Tensor,
    eps_theta: torch.Tensor,
    variance: str = "beta_tilde",
) -> torch.Tensor:
    """L_0 = -log p_theta(x_0 | x_1) in nats, shape ``(B,)``, with the discretised Gaussian decoder (sec. 3.3).

    Args:
        x0: ``(B, ...)`` data on the 256-level grid in [-1, 1].
        x1: ``(B, ...)`` the paper's x_1 (code step 0), e.g. ``q_sample(schedule, x0, 0)``.
        eps_theta: ``(B, ...)`` the network's output at (x1, code step 0).
        variance: which sigma_1^2 to use, see :func:`decoder_variance`.
    """
    check_same_shape(x0, x1, "x0", "x1")
    t0 = torch.zeros(x1.shape[0], dtype=torch.long, device=x1.device)
    mean = p_mean(schedule, x1, t0, eps_theta)
    var = decoder_variance(schedule, variance).to(device=x1.device, dtype=x1.dtype)
    return -_sum_dims(discretized_gaussian_log_likelihood(x0, mean, var))


@dataclass
class VLBResult:
    """The variational bound of each image, split into its terms (all in bits per dimension)."""

    total: torch.Tensor  #: (B,) L_T + sum_t L_{t-1} + L_0
    prior: torch.Tensor  #: (B,) L_T
    decoder: torch.Tensor  #: (B,) L_0
    terms: torch.Tensor  #: (B, T) L_{t-1} per code step t (column 0 holds L_0, the decoder)


@torch.inference_mode()
def vlb_bits_per_dim(
    model: Model,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    variance: str = "beta_tilde",
    batch_size: int = 256,
    progress: bool = True,
) -> VLBResult:
    """The whole bound -log p(x_0) <= L = L_T + sum_{t=2}^T L_{t-1} + L_0, in bits per dimension.

    Each L_{t-1} is estimated with one draw x_t ~ q(x_t | x_0); all T steps are evaluated
    (T network calls per image, batched ``batch_size`` at a time).

    Args:
        model: ``model(xt, t) -> eps_hat``.
        x0: ``(B, C, H, W)`` data on the 256-level grid in [-1, 1].
        generator: optional generator for the x_t draws.
        variance: sigma_t^2, ``"beta"`` or ``"beta_tilde"``.
        batch_size: how many (image, step) pairs go through the network at once.
        progress: show a tqdm progress bar.

    Raises:
        TypeError, ValueError: ``x0`` is not float data in [-1, 1] (convert pixels with ``data.to_model_range``),
            ``batch_size`` is not a positive int, or the model returns no tensor shaped like its input.
        FloatingPointError: the model's output is NaN or inf (the message names the code steps).
    """
    check_choice(variance, VARIANCES, "variance")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int ((image, step) pairs per network call), got {batch_size!r}")
    check_float_data(x0, "x0", model_range=True)  # the discretised decoder assumes the 256-level grid in [-1, 1]
    if x0.dim() < 2 or x0.shape[0] < 1:
        raise ValueError(f"x0 must be a batch (B, C, H, W) with B >= 1, got shape {tuple(x0.shape)}")
    check_model_T(model, schedule.T)
    B, T = x0.shape[0], schedule.T
    dims = x0[0].numel()
    terms = torch.zeros(B, T, dtype=torch.float64, device=x0.device)
    steps = torch.arange(T, device=x0.device)
    pairs = torch.cartesian_prod(torch.arange(B, device=x0.device), steps)  # (B*T, 2): (image, step)
    for start in tqdm(range(0, pairs.shape[0], batch_size), desc="bound", disable=not progress, leave=False):
        idx, t = pairs[start : start + batch_size].unbind(1)
        x0_b = x0[idx]
        xt = q_sample(schedule, x0_b, t, generator=generator)
        eps_theta = check_model_output(model(xt, t), xt).float()
        check_finite(eps_theta, f"the model's output eps_theta (code steps {int(t.min())}..{int(t.max())})")
        out = torch.empty(idx.shape[0], dtype=torch.float64, device=x0.device)
        first = t == 0
        if first.any():
            out[first] = decoder_nll(schedule, x0_b[first], xt[first], eps_theta[first], variance).double()
        if (~first).any():
            rest = ~first
            out[rest] = kl_term(schedule, x0_b[rest], xt[rest], t[rest], eps_theta[rest], variance).double()
        terms[idx, t] = out
    prior = prior_kl(schedule, x0).double()
    to_bpd = 1.0 / (dims * math.log(2.0))
    terms = terms * to_bpd
    prior = prior * to_bpd
    return VLBResult(total=terms.sum(dim=1) + prior, prior=prior, decoder=terms[:, 0], terms=terms)
