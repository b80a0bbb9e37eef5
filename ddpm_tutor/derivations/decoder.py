"""Chapter 5 (the L_0 term): the discretised Gaussian decoder p_theta(x_0 | x_1) of DDPM sec. 3.3.

Pixel values {0, ..., 255} are scaled to [-1, 1], so value k sits at x_k = 2k/255 - 1 and the
bins have width 2/255. p_theta(x_0 | x_1) = prod_i int_{delta_-(x_0^i)}^{delta_+(x_0^i)} N(x; mu^i, sigma_1^2) dx
with delta_+(x) = x + 1/255 (infinity at x = 1) and delta_-(x) = x - 1/255 (-infinity at
x = -1) (Ho et al. 2020, eq. 13). The article names this term (the reconstruction term) but never defines it.
"""

from __future__ import annotations

import random

import mpmath
import sympy as sp

from ._core import Proof, _Derivation, latex, sym

__all__ = ["Phi", "std_normal_cdf", "bin_centre", "bin_edges", "bin_probability_expr", "discretised_decoder"]

_PHI = sp.exp(-sym.z**2 / 2) / sp.sqrt(2 * sp.pi)  # standard normal density phi(z)
N_BINS = 256
HALF_WIDTH = sp.Rational(1, 255)


class Phi(sp.Function):
    """The standard normal CDF Phi(w) = (1 + erf(w / sqrt(2))) / 2 as a SymPy function.

    Phi(oo) = 1 and Phi(-oo) = 0 evaluate at once; ``.rewrite(sp.erf)`` gives the erf form,
    and ``sympy.lambdify`` evaluates it with ``mpmath.ncdf`` (or pass ``modules`` as usual).
    Kept unevaluated so that sums of CDF differences cancel term by term, visibly.
    """

    nargs = 1
    _imp_ = staticmethod(lambda w: mpmath.ncdf(w))

    @classmethod
    def eval(cls, w):
        if w is sp.S.Infinity:
            return sp.S.One
        if w is sp.S.NegativeInfinity:
            return sp.S.Zero
        return None

    def fdiff(self, argindex=1):
        w = self.args[0]
        return sp.exp(-(w**2) / 2) / sp.sqrt(2 * sp.pi)

    def _eval_rewrite_as_erf(self, w, **kwargs):
        return (1 + sp.erf(w / sp.sqrt(2))) / 2


def std_normal_cdf(w) -> sp.Expr:
    """Phi(w) = (1 + erf(w / sqrt(2))) / 2, with Phi(-oo) = 0 and Phi(oo) = 1 (an erf expression)."""
    return Phi(sp.sympify(w)).rewrite(sp.erf)


def bin_centre(k) -> sp.Expr:
    """x_k = 2k/255 - 1, the value in [-1, 1] of pixel value k in {0, ..., 255} (exact rational)."""
    return 2 * sp.sympify(k) / 255 - 1


def bin_edges(k: int, half_width=HALF_WIDTH, open_edges: bool = True) -> tuple[sp.Expr, sp.Expr]:
    """(delta_-, delta_+) of pixel value ``k``: x_k -/+ half_width, with -oo / +oo at the two ends if ``open_edges``."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < N_BINS:
        raise ValueError(f"k must be an int pixel value in 0..{N_BINS - 1}, got {k!r}")
    x = bin_centre(k)
    lo = -sp.oo if (open_edges and k == 0) else x - half_width
    hi = sp.oo if (open_edges and k == N_BINS - 1) else x + half_width
    return lo, hi


def bin_probability_expr(k: int, mu=sym.mu, sigma=sym.sigma, half_width=HALF_WIDTH, open_edges: bool = True) -> sp.Expr:
    """P(x_0 = x_k) = Phi((delta_+ - mu)/sigma) - Phi((delta_- - mu)/sigma) for one coordinate (eq. 13).

    In terms of :class:`Phi`; ``.rewrite(sp.erf)`` gives erf, ``sympy.lambdify(..., modules="mpmath")``
    evaluates it with ``mpmath.ncdf``.
    """
    lo, hi = bin_edges(k, half_width, open_edges)
    return Phi((hi - mu) / sigma) - Phi((lo - mu) / sigma)


def discretised_decoder(half_width=None, open_edges: bool = True, *, strict: bool = True) -> Proof:
    """The bin probabilities of the discretised decoder are Gaussian CDF differences and sum to 1.

    Shows int_a^b N(x; mu, sigma^2) dx = Phi((b - mu)/sigma) - Phi((a - mu)/sigma) (with the
    one-sided integrals at the edges), that neighbouring bins share an edge, and that the 256
    probabilities sum to exactly 1 for symbolic mu and sigma (the sum telescopes); then checks
    the sum numerically with mpmath at a few (mu, sigma).

    Args:
        half_width: half the bin width, default 1/255 (bins of width 2/255 around x_k).
        open_edges: extend the first and last bins to -oo / +oo (default, as in DDPM).
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.
    """
    h = HALF_WIDTH if half_width is None else sp.nsimplify(half_width)
    if not (h.is_number and h > 0):
        raise ValueError(f"half_width must be a positive number such as 1/255, got {half_width!r}")
    if not isinstance(open_edges, bool):
        raise TypeError(f"open_edges must be True or False, got {type(open_edges).__name__}")
    mu, sigma, z, w = sym.mu, sym.sigma, sym.z, sp.Symbol("w", real=True)
    a, b = sp.Symbol("a", real=True), sp.Symbol("b", real=True)
    d = _Derivation(
        r"Discretised decoder $p_\theta(x_0 \mid x_1)$: the bin probabilities sum to 1",
        r"p_\theta(x_0\mid x_1) = \prod_{i}\int_{\delta_-(x_0^i)}^{\delta_+(x_0^i)}\mathcal{N}(x;\mu_\theta^i(x_1,1),\sigma_1^2)\,dx"
        r" = \prod_i\Big[\Phi\Big(\frac{\delta_+(x_0^i)-\mu^i}{\sigma_1}\Big) - \Phi\Big(\frac{\delta_-(x_0^i)-\mu^i}{\sigma_1}\Big)\Big]",
        "Ho et al. 2020, sec. 3.3, eq. (13); the article names L_0 but leaves it undefined",
        strict,
    )
    density = sp.exp(-((sym.x - mu) ** 2) / (2 * sigma**2)) / sp.sqrt(2 * sp.pi * sigma**2)
    d.claim(
        r"substitute $x = \mu + \sigma z$: the density times the Jacobian is $\varphi(z)$, so limits map to $(\cdot - \mu)/\sigma$",
        sigma * density.subs(sym.x, mu + sigma * z),
        _PHI,
        latex_str=r"\sigma\,\mathcal{N}(\mu + \sigma z;\ \mu, \sigma^2) = " + latex(_PHI),
    )
    cdf = std_normal_cdf
    d.claim(
        r"the CDF, integrated: $\Phi(w) = \int_{-\infty}^{w}\varphi$ (the left-edge bin)",
        sp.integrate(_PHI, (z, -sp.oo, w), meijerg=False).rewrite(sp.erf),
        cdf(w),
        latex_str=r"\int_{-\infty}^{w}\varphi(z)\,dz = " + latex(cdf(w)) + r" =: \Phi(w)",
    )
    d.claim(
        r"the right-edge bin: $\int_{w}^{\infty}\varphi = 1 - \Phi(w)$",
        sp.integrate(_PHI, (z, w, sp.oo), meijerg=False).rewrite(sp.erf),
        1 - cdf(w),
        latex_str=r"\int_{w}^{\infty}\varphi(z)\,dz = 1 - \Phi(w)",
    )
    d.claim(
        r"an inside bin: $\int_a^b\varphi = \Phi(b) - \Phi(a)$",
        sp.integrate(_PHI, (z, a, b), meijerg=False).rewrite(sp.erf),
        cdf(b) - cdf(a),
        latex_str=r"\int_{a}^{b}\varphi(z)\,dz = \Phi(b) - \Phi(a)",
    )
    hw = latex(h)
    d.note(
        r"so, with $x = x_k = 2k/255 - 1$ and $\delta_\pm = x \pm " + hw + r"$, for $k = 0$, $0 < k < 255$ and $k = 255$",
        r"P(x_0 = -1) = \Phi\Big(\frac{-1 + " + hw + r" - \mu}{\sigma}\Big),\quad "
        r"P(x_0 = x) = \Phi\Big(\frac{x + " + hw + r" - \mu}{\sigma}\Big) - \Phi\Big(\frac{x - " + hw + r" - \mu}{\sigma}\Big),\quad "
        r"P(x_0 = 1) = 1 - \Phi\Big(\frac{1 - " + hw + r" - \mu}{\sigma}\Big)",
    )
    k = sp.Symbol("k", integer=True)
    d.claim(
        r"the pixel grid: $x_0 = -1$, $x_{255} = 1$, and neighbouring bins share an edge ($x_k + \delta = x_{k+1} - \delta$)",
        sp.Tuple(bin_centre(0), bin_centre(255), bin_centre(k) + h),
        sp.Tuple(-1, 1, bin_centre(k + 1) - h),
        latex_str=r"x_0 = -1,\ x_{255} = 1,\ x_k + " + hw + r" = x_{k+1} - " + hw,
    )
    probs = [bin_probability_expr(j, mu, sigma, h, open_edges) for j in range(N_BINS)]
    total = sp.Add(*probs)
    d.claim(
        r"the 256 probabilities sum to 1 for every $\mu$ and $\sigma$: the CDF terms telescope, "
        r"leaving $\Phi(+\infty) - \Phi(-\infty)$",
        total,
        1,
        latex_str=r"\sum_{k=0}^{255} P(x_0 = x_k) = "
        + " + ".join(r"\Big[" + latex(probs[j]) + r"\Big]" for j in (0, 1))
        + r" + \cdots + \Big[" + latex(probs[-1]) + r"\Big] = " + latex(total),
    )
    # Numerically, with mpmath at 30 digits, at a few (mu, sigma), including mu outside [-1, 1]:
    # P_k = ncdf((delta_+ - mu)/sigma) - ncdf((delta_- - mu)/sigma) evaluated from the edges directly.
    def to_mpf(v: sp.Expr):
        return mpmath.inf if v == sp.oo else -mpmath.inf if v == -sp.oo else mpmath.mpf(int(v.p)) / int(v.q)

    rng = random.Random(13)
    edges = [tuple(to_mpf(e) for e in bin_edges(j, h, open_edges)) for j in range(N_BINS)]
    worst, negative = mpmath.mpf(0), False
    with mpmath.workdps(30):
        for m, s in [(0.0, 0.01), (0.99, 0.003), (-1.7, 0.5)] + [(rng.uniform(-1.2, 1.2), rng.uniform(1e-3, 1.0)) for _ in range(3)]:
            m, s = mpmath.mpf(m), mpmath.mpf(s)
            values = [mpmath.ncdf((hi - m) / s) - mpmath.ncdf((lo - m) / s) for lo, hi in edges]
            worst = max(worst, abs(mpmath.fsum(values) - 1))
            negative = negative or any(v < 0 for v in values)
    d.claim(
        r"checked with mpmath (30 digits) at six $(\mu, \sigma)$: every probability is $\geq 0$ and the largest "
        r"$|\sum_k P - 1|$ is below $10^{-25}$",
        sp.Integer(int(bool(worst < mpmath.mpf("1e-25")) and not negative)),
        1,
        latex_str=r"\max_{(\mu,\sigma)}\Big|\sum_k P(x_0 = x_k) - 1\Big| = " + mpmath.nstr(worst, 3) + r" < 10^{-25}",
    )
    return d.finish(total, sp.Integer(1))
