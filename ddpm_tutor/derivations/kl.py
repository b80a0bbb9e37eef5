"""Chapter 5: the KL divergence between Gaussians, and why it becomes a squared error of means.

Ho et al. 2020, eq. (5) (the L_{t-1} terms are KLs between Gaussians) and eq. (8)
(L_{t-1} = ||mu_tilde_t - mu_theta||^2 / (2 sigma_t^2) + C); the article's KL section of the training objective.
"""

from __future__ import annotations

import sympy as sp

from ._core import Proof, _Derivation, _sympify_claim, latex, log_normal, split_sums, sym

__all__ = ["kl_normal_expr", "kl_by_integration", "gaussian_moments_by_integration", "gaussian_kl"]

_PHI = sp.exp(-sym.z**2 / 2) / sp.sqrt(2 * sp.pi)  # standard normal density


def kl_normal_expr(mu1=sym.mu_1, sigma1=sym.sigma_1, mu2=sym.mu_2, sigma2=sym.sigma_2) -> sp.Expr:
    """KL(N(mu1, sigma1^2) || N(mu2, sigma2^2)) = log(sigma2/sigma1) + (sigma1^2 + (mu1-mu2)^2)/(2 sigma2^2) - 1/2.

    ``sigma1``, ``sigma2`` are standard deviations (not variances). 1-D; an isotropic
    d-dimensional pair is the sum over coordinates.
    """
    return sp.log(sigma2 / sigma1) + (sigma1**2 + (mu1 - mu2) ** 2) / (2 * sigma2**2) - sp.Rational(1, 2)


def gaussian_moments_by_integration(max_order: int = 2) -> list[sp.Expr]:
    """[E z^0, E z^1, ..., E z^max_order] for z ~ N(0, 1), each by ``sympy.integrate``."""
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 0:
        raise ValueError(f"max_order must be a non-negative int, got {max_order!r}")
    return [sp.integrate(sym.z**k * _PHI, (sym.z, -sp.oo, sp.oo)) for k in range(max_order + 1)]


def kl_by_integration(mu1=sym.mu_1, sigma1=sym.sigma_1, mu2=sym.mu_2, sigma2=sym.sigma_2) -> sp.Expr:
    """KL(N(mu1, sigma1^2) || N(mu2, sigma2^2)) = E_{x ~ N(mu1, sigma1^2)}[log N1(x) - log N2(x)], integrated.

    With x = mu1 + sigma1 z the log-ratio is a quadratic c0 + c1 z + c2 z^2 in z ~ N(0, 1),
    so the expectation is c0 E[1] + c1 E[z] + c2 E[z^2], the moments being integrated by SymPy.
    """
    log_ratio = log_normal(sym.x, mu1, sigma1**2) - log_normal(sym.x, mu2, sigma2**2)
    in_z = sp.Poly(sp.expand(log_ratio.subs(sym.x, mu1 + sigma1 * sym.z)), sym.z)
    moments = gaussian_moments_by_integration(in_z.degree())
    return sp.expand(sum(in_z.coeff_monomial(sym.z**k) * moments[k] for k in range(in_z.degree() + 1)))


def gaussian_kl(kl=None, *, strict: bool = True) -> Proof:
    """The Gaussian KL by integration, its isotropic d-dim form, and its fixed-variance reduction.

    1. KL(N(mu1, sigma1^2) || N(mu2, sigma2^2)) = log(sigma2/sigma1) + (sigma1^2 + (mu1-mu2)^2)/(2 sigma2^2) - 1/2.
    2. Isotropic d-dim: d log(sigma2/sigma1) + (d sigma1^2 + ||mu1 - mu2||^2)/(2 sigma2^2) - d/2
       (checked for d = 3 explicitly and for symbolic d with a SymPy ``Sum``).
    3. With the variances fixed, KL(N(mu_tilde, beta_tilde I) || N(mu_theta, sigma_t^2 I))
       = ||mu_tilde - mu_theta||^2 / (2 sigma_t^2) + C, C = d/2 (beta_tilde/sigma_t^2 - 1 - log(beta_tilde/sigma_t^2))
       free of mu_theta (Ho et al. 2020, eq. 8), and C = 0 when sigma_t^2 = beta_tilde
       (for d = 3 coordinates written out, then for symbolic d with SymPy sums).

    The returned proof's ``lhs`` is the KL obtained by integration (:func:`kl_by_integration`),
    ``rhs`` the claimed formula.

    Args:
        kl: claimed 1-D KL in ``sym.mu_1, sym.sigma_1, sym.mu_2, sym.sigma_2`` (standard
            deviations); default :func:`kl_normal_expr`. Steps 2-3 use the claimed formula.
        strict: raise :class:`ProofError` on a failed claim (default) or return ``holds=False``.
    """
    m1, s1, m2, s2 = sym.mu_1, sym.sigma_1, sym.mu_2, sym.sigma_2
    kl_claim = kl_normal_expr() if kl is None else _sympify_claim(kl, "kl")

    def kl_1d(a, sa, b, sb):
        return kl_claim.subs({m1: a, s1: sa, m2: b, s2: sb}, simultaneous=True)

    d = _Derivation(
        "KL divergence between Gaussians",
        r"D_{\mathrm{KL}}\big(\mathcal{N}(\mu_1,\sigma_1^2)\,\|\,\mathcal{N}(\mu_2,\sigma_2^2)\big)"
        r" = \log\frac{\sigma_2}{\sigma_1} + \frac{\sigma_1^2 + (\mu_1-\mu_2)^2}{2\sigma_2^2} - \frac{1}{2}",
        "Ho et al. 2020, eqs. (5) and (8); the article's KL section of the training objective",
        strict,
    )
    density1 = sp.exp(-((sym.x - m1) ** 2) / (2 * s1**2)) / sp.sqrt(2 * sp.pi * s1**2)
    d.note(
        "definition: the expected log-ratio of the densities under the first one",
        r"D_{\mathrm{KL}}(q\,\|\,p) = \int q(x)\,\log\frac{q(x)}{p(x)}\,dx,\qquad q = \mathcal{N}(\mu_1,\sigma_1^2),\ "
        r"p = \mathcal{N}(\mu_2,\sigma_2^2)",
    )
    d.claim(
        r"substitute $x = \mu_1 + \sigma_1 z$: the density times the Jacobian $\sigma_1$ is the standard normal $\varphi(z)$",
        s1 * density1.subs(sym.x, m1 + s1 * sym.z),
        _PHI,
        latex_str=r"\sigma_1\,\mathcal{N}(\mu_1 + \sigma_1 z;\ \mu_1, \sigma_1^2) = " + latex(_PHI),
    )
    log_ratio = log_normal(sym.x, m1, s1**2) - log_normal(sym.x, m2, s2**2)
    in_z = sp.Poly(sp.expand(log_ratio.subs(sym.x, m1 + s1 * sym.z)), sym.z)
    c0 = sp.log(s2 / s1) + (m1 - m2) ** 2 / (2 * s2**2)
    c1 = s1 * (m1 - m2) / s2**2
    c2 = (s1**2 - s2**2) / (2 * s2**2)
    d.claim(
        r"the log-ratio is a quadratic $c_0 + c_1 z + c_2 z^2$ in $z$",
        sp.Tuple(*[in_z.coeff_monomial(sym.z**k) for k in range(3)]),
        sp.Tuple(c0, c1, c2),
        latex_str=r"\log\frac{q}{p}(\mu_1 + \sigma_1 z) = \underbrace{" + latex(c0) + r"}_{c_0} + \underbrace{"
        + latex(c1) + r"}_{c_1} z + \underbrace{" + latex(c2) + r"}_{c_2} z^2",
    )
    moments = gaussian_moments_by_integration(2)
    d.claim(
        r"the moments of $z \sim \mathcal{N}(0,1)$, integrated",
        sp.Tuple(*moments),
        sp.Tuple(1, 0, 1),
        latex_str=r"\Big(\int \varphi,\ \int z\varphi,\ \int z^2\varphi\Big) = (1, 0, 1)",
    )
    kl_int = kl_by_integration()
    d.claim(
        "so the KL is the constant term plus the $z^2$ coefficient",
        kl_int,
        kl_claim,
        latex_str=r"D_{\mathrm{KL}} = " + latex(kl_claim),
    )

    # Isotropic d-dimensional Gaussians, d = 3 explicitly.
    dim = 3
    xs = sp.symbols(f"x_1:{dim + 1}", real=True)
    mu1v = sp.symbols(f"mu_1_1:{dim + 1}", real=True)
    mu2v = sp.symbols(f"mu_2_1:{dim + 1}", real=True)
    sq = sp.Symbol("sigma", positive=True)
    log_nd = -sum((xi - mi) ** 2 for xi, mi in zip(xs, mu1v)) / (2 * sq**2) - sp.Rational(dim, 2) * sp.log(
        2 * sp.pi * sq**2
    )
    d.claim(
        r"an isotropic Gaussian factorises: its log-density is the sum of $d$ one-dimensional ones ($d = 3$)",
        log_nd,
        sum(log_normal(xi, mi, sq**2) for xi, mi in zip(xs, mu1v)),
        latex_str=r"\log\mathcal{N}(x;\mu,\sigma^2 I) = -\frac{\|x-\mu\|^2}{2\sigma^2} - \frac{d}{2}\log(2\pi\sigma^2)"
        r" = \sum_{i=1}^d \log\mathcal{N}(x_i;\mu_i,\sigma^2)",
    )
    sqnorm = sum((a - b) ** 2 for a, b in zip(mu1v, mu2v))
    d.claim(
        r"so the KL is the sum of per-coordinate KLs ($d = 3$)",
        sum(kl_1d(a, s1, b, s2) for a, b in zip(mu1v, mu2v)),
        dim * sp.log(s2 / s1) + (dim * s1**2 + sqnorm) / (2 * s2**2) - sp.Rational(dim, 2),
        latex_str=r"\sum_{i=1}^{d} D_{\mathrm{KL}}^{(i)} = d\log\frac{\sigma_2}{\sigma_1}"
        r" + \frac{d\sigma_1^2 + \|\mu_1-\mu_2\|^2}{2\sigma_2^2} - \frac{d}{2}",
    )
    i, n = sp.Symbol("i", integer=True, positive=True), sp.Symbol("d", integer=True, positive=True)
    M1, M2 = sp.IndexedBase("mu_1"), sp.IndexedBase("mu_2")
    d.claim(
        r"and for any dimension $d$ (a symbolic sum)",
        sp.expand(sp.Sum(kl_1d(M1[i], s1, M2[i], s2), (i, 1, n))).doit(),
        sp.expand(
            n * sp.log(s2 / s1) + (n * s1**2 + sp.Sum((M1[i] - M2[i]) ** 2, (i, 1, n))) / (2 * s2**2) - n / sp.Integer(2)
        ).doit(),
        latex_str=r"\sum_{i=1}^{d} D_{\mathrm{KL}}\big(\mathcal{N}(\mu_{1,i},\sigma_1^2)\,\|\,\mathcal{N}(\mu_{2,i},\sigma_2^2)\big)"
        r" = d\log\frac{\sigma_2}{\sigma_1} + \frac{d\sigma_1^2 + \sum_i(\mu_{1,i}-\mu_{2,i})^2}{2\sigma_2^2} - \frac{d}{2}",
    )

    # Fixed variances: the KL is a squared error of the means plus a constant.
    bt = sp.Symbol("beta_tilde_t", positive=True)
    s2t = sym.sigma2_t
    mu_tilde = sp.symbols(f"mu_tilde_1:{dim + 1}", real=True)
    mu_theta = sp.symbols(f"mu_theta_1:{dim + 1}", real=True)
    kl_fixed = sum(kl_1d(a, sp.sqrt(bt), b, sp.sqrt(s2t)) for a, b in zip(mu_tilde, mu_theta))
    sq_err = sum((a - b) ** 2 for a, b in zip(mu_tilde, mu_theta)) / (2 * s2t)
    const = sp.Rational(dim, 2) * (bt / s2t - 1 - sp.log(bt / s2t))
    d.claim(
        r"with $q = \mathcal{N}(\tilde{\mu}_t, \tilde{\beta}_t I)$ and $p_\theta = \mathcal{N}(\mu_\theta, \sigma_t^2 I)$, "
        r"the KL is the squared error of the means over $2\sigma_t^2$ plus $C$ ($d = 3$)",
        kl_fixed,
        sq_err + const,
        latex_str=r"D_{\mathrm{KL}} = \frac{\|\tilde{\mu}_t - \mu_\theta\|^2}{2\sigma_t^2} + C,\quad"
        r" C = \frac{d}{2}\Big(\frac{\tilde{\beta}_t}{\sigma_t^2} - 1 - \log\frac{\tilde{\beta}_t}{\sigma_t^2}\Big)",
    )
    d.claim(
        r"$C$ does not depend on $\mu_\theta$: its gradient in $\mu_\theta$ is zero",
        sp.Tuple(*[sp.diff(kl_fixed - sq_err, m) for m in mu_theta]),
        sp.Tuple(*[0] * dim),
        latex_str=r"\nabla_{\mu_\theta}\Big(D_{\mathrm{KL}} - \frac{\|\tilde{\mu}_t - \mu_\theta\|^2}{2\sigma_t^2}\Big) = 0",
    )
    d.claim(
        r"and $C = 0$ when $\sigma_t^2 = \tilde{\beta}_t$",
        (kl_fixed - sq_err).subs(s2t, bt),
        0,
        latex_str=r"C\big|_{\sigma_t^2 = \tilde{\beta}_t} = 0",
    )
    # The same reduction for any dimension d: sums over coordinates i = 1..d, split by linearity.
    MT, MTh = sp.IndexedBase("mu_tilde"), sp.IndexedBase("mu_theta")
    kl_fixed_d = sp.Sum(kl_1d(MT[i], sp.sqrt(bt), MTh[i], sp.sqrt(s2t)), (i, 1, n))
    sq_err_d = sp.Sum((MT[i] - MTh[i]) ** 2, (i, 1, n)) / (2 * s2t)
    const_d = n / sp.Integer(2) * (bt / s2t - 1 - sp.log(bt / s2t))
    d.claim(
        r"for any dimension $d$ (symbolic sums over the coordinates): the squared error of the means plus the same $C$",
        split_sums(kl_fixed_d),
        split_sums(sq_err_d) + const_d,
        latex_str=r"\sum_{i=1}^{d} D_{\mathrm{KL}}\big(\mathcal{N}(\tilde{\mu}_{t,i},\tilde{\beta}_t)\,\|\,"
        r"\mathcal{N}(\mu_{\theta,i},\sigma_t^2)\big) = \frac{\sum_i(\tilde{\mu}_{t,i}-\mu_{\theta,i})^2}{2\sigma_t^2}"
        r" + \frac{d}{2}\Big(\frac{\tilde{\beta}_t}{\sigma_t^2} - 1 - \log\frac{\tilde{\beta}_t}{\sigma_t^2}\Big)",
    )
    return d.finish(kl_int, kl_claim)
