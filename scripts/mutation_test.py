"""Mutation test: apply plausible wrong variants of the package's formulas one at a time and
check that the unit tests catch each.

    python scripts/mutation_test.py                 # every mutant, prints caught / missed
    python scripts/mutation_test.py --only losses   # the mutants whose label contains 'losses'
    python scripts/mutation_test.py --only "top bin,clipped"   # several labels
    python scripts/mutation_test.py --list

Each mutant is (label, file, old text, new text, test files). The old text must occur exactly
once in the file. The repository's tracked files are copied to a temporary folder once; each
mutant is written there, the relevant test files run with
``pytest -x -q -p no:cacheprovider`` (the first failure stops it), and the file is restored. A
mutant is *caught* when pytest fails. The working tree itself is never modified.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORE = "tests/test_core.py"
BOUND = "tests/test_bound_terms.py"
DERIV = "tests/test_derivations.py"
TOY = "tests/test_toy_elbo.py"
RSTEP = "tests/test_reverse_step.py"

L, S, F, P, R, SA = (
    "ddpm_tutor/losses.py",
    "ddpm_tutor/schedules.py",
    "ddpm_tutor/forward.py",
    "ddpm_tutor/posterior.py",
    "ddpm_tutor/reverse.py",
    "ddpm_tutor/sampling.py",
)
DV = "ddpm_tutor/derivations/"

# (label, file, old, new, tests)
MUTANTS: list[tuple[str, str, str, str, list[str]]] = [
    # ---- schedules
    ("schedules: alpha = 1 - beta^2", S, "alphas = 1.0 - betas\n", "alphas = 1.0 - betas**2\n", [BOUND, CORE]),
    ("schedules: alpha_bar as a cumulative sum", S, "alpha_bars = torch.cumprod(alphas, dim=0)", "alpha_bars = 1.0 - torch.cumsum(betas, dim=0)", [BOUND, CORE]),
    ("schedules: alpha_bar shifted by one step", S, "alpha_bars = torch.cumprod(alphas, dim=0)", "alpha_bars = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.float64), alphas[:-1]]), dim=0)", [BOUND, CORE]),
    ("schedules: alpha_bars_prev padded with 0", S, "torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])", "torch.cat([torch.zeros(1, dtype=torch.float64), alpha_bars[:-1]])", [BOUND, CORE]),
    ("schedules: alpha_bars_prev = alpha_bars", S, "torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])", "alpha_bars.clone()", [BOUND, CORE]),
    ("schedules: beta_tilde = beta", S, "posterior_variance = betas * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)", "posterior_variance = betas.clone()", [BOUND, CORE]),
    ("schedules: beta_tilde with the ratio inverted", S, "posterior_variance = betas * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)", "posterior_variance = betas * (1.0 - alpha_bars) / (1.0 - alpha_bars_prev)", [BOUND, CORE]),
    ("schedules: coef_x0 without the square root", S, "posterior_mean_coef_x0=alpha_bars_prev.sqrt() * betas", "posterior_mean_coef_x0=alpha_bars_prev * betas", [BOUND, CORE]),
    ("schedules: coef_x0 with alpha_bar_t", S, "posterior_mean_coef_x0=alpha_bars_prev.sqrt() * betas", "posterior_mean_coef_x0=alpha_bars.sqrt() * betas", [BOUND, CORE]),
    ("schedules: coef_xt with alpha for sqrt(alpha)", S, "posterior_mean_coef_xt=alphas.sqrt() * (1.0 - alpha_bars_prev)", "posterior_mean_coef_xt=alphas * (1.0 - alpha_bars_prev)", [BOUND, CORE]),
    ("schedules: linear betas end at beta_1", S, "torch.linspace(beta_1, beta_T, T, dtype=torch.float64)", "torch.linspace(beta_1, beta_1 + (beta_T - beta_1) * (T - 1) / T, T, dtype=torch.float64)", [CORE, DERIV]),
    ("schedules: cosine without the offset s", S, "f = torch.cos(((steps / T) + s) / (1 + s) * math.pi / 2) ** 2", "f = torch.cos((steps / T) * math.pi / 2) ** 2 + 0 * s", [CORE]),
    ("schedules: cosine betas from the ratio inverted", S, "betas = (1.0 - alpha_bar[1:] / alpha_bar[:-1])", "betas = (1.0 - alpha_bar[:-1] / alpha_bar[1:]).abs()", [CORE]),
    ("schedules: snr inverted", S, "return self.alpha_bars / (1.0 - self.alpha_bars)", "return (1.0 - self.alpha_bars) / self.alpha_bars", [CORE]),
    # ---- forward
    ("forward: q_step with beta for sqrt(beta)", F, "extract(schedule.betas.sqrt(), t, x_prev) * eps", "extract(schedule.betas, t, x_prev) * eps", [CORE]),
    ("forward: q_step mean with alpha for sqrt(alpha)", F, "extract(schedule.alphas.sqrt(), t, x_prev) * x_prev", "extract(schedule.alphas, t, x_prev) * x_prev", [CORE]),
    ("forward: q_sample with 1 - alpha_bar unrooted", F, "extract((1.0 - schedule.alpha_bars).sqrt(), t, x0) * eps", "extract(1.0 - schedule.alpha_bars, t, x0) * eps", [BOUND, CORE]),
    ("forward: q_sample mean with alpha_bar unrooted", F, "extract(schedule.alpha_bars.sqrt(), t, x0) * x0", "extract(schedule.alpha_bars, t, x0) * x0", [BOUND, CORE]),
    ("forward: q_sample one step early", F, "extract(schedule.alpha_bars.sqrt(), t, x0) * x0", "extract(schedule.alpha_bars_prev.sqrt(), t, x0) * x0", [BOUND, CORE]),
    # ---- posterior
    ("posterior: coefficients swapped", P, "extract(schedule.posterior_mean_coef_x0, t, xt) * x0 + extract(schedule.posterior_mean_coef_xt, t, xt) * xt", "extract(schedule.posterior_mean_coef_xt, t, xt) * x0 + extract(schedule.posterior_mean_coef_x0, t, xt) * xt", [BOUND, CORE]),
    ("posterior: variance beta", P, "variance = extract(schedule.posterior_variance, t, xt)", "variance = extract(schedule.betas, t, xt)", [BOUND, CORE]),
    ("posterior: predict_x0 with alpha_bar unrooted", P, "/ extract(schedule.alpha_bars.sqrt(), t, xt)", "/ extract(schedule.alpha_bars, t, xt)", [BOUND, CORE]),
    ("posterior: predict_x0 with 1 - alpha_bar unrooted", P, "(xt - extract((1.0 - schedule.alpha_bars).sqrt(), t, xt) * eps)", "(xt - extract(1.0 - schedule.alpha_bars, t, xt) * eps)", [BOUND, CORE]),
    # ---- reverse
    ("reverse: p_mean divides by alpha_bar", R, "return (xt - coef * eps_theta) / extract(schedule.alphas.sqrt(), t, xt)", "return (xt - coef * eps_theta) / extract(schedule.alpha_bars.sqrt(), t, xt)", [BOUND, CORE]),
    ("reverse: p_mean coefficient unrooted", R, "coef = extract(schedule.betas / (1.0 - schedule.alpha_bars).sqrt(), t, xt)", "coef = extract(schedule.betas / (1.0 - schedule.alpha_bars), t, xt)", [BOUND, CORE]),
    ("reverse: p_mean coefficient sqrt(beta)", R, "coef = extract(schedule.betas / (1.0 - schedule.alpha_bars).sqrt(), t, xt)", "coef = extract(schedule.betas.sqrt() / (1.0 - schedule.alpha_bars).sqrt(), t, xt)", [BOUND, CORE]),
    ("reverse: p_variance always beta", R, "return schedule.betas if variance == \"beta\" else schedule.posterior_variance", "return schedule.betas", [BOUND, CORE]),
    ("reverse: p_variance choices swapped", R, "return schedule.betas if variance == \"beta\" else schedule.posterior_variance", "return schedule.posterior_variance if variance == \"beta\" else schedule.betas", [BOUND, CORE]),
    ("reverse: noise at code step 0", R, "nonzero = (t != 0).to(xt.dtype)", "nonzero = (t >= 0).to(xt.dtype)", [CORE]),
    ("reverse: no noise at code step 1 either", R, "nonzero = (t != 0).to(xt.dtype)", "nonzero = (t > 1).to(xt.dtype)", [CORE]),
    ("reverse: sigma without the square root", R, "sigma = extract(p_variance(schedule, variance).sqrt(), t, xt)", "sigma = extract(p_variance(schedule, variance), t, xt)", [CORE]),
    ("reverse: clipped mean from the unclipped x0_hat", R, "mean, _ = q_posterior(schedule, x0_hat, xt, t)", "mean = p_mean(schedule, xt, t, eps_theta)", [RSTEP, CORE]),
    # ---- sampling
    ("sampling: loop starts at T-2", SA, "range(schedule.T - 1, -1, -1)", "range(schedule.T - 2, -1, -1)", [CORE]),
    ("sampling: loop stops at code step 1", SA, "range(schedule.T - 1, -1, -1)", "range(schedule.T - 1, 0, -1)", [CORE]),
    # (drawing z on the last step too is an equivalent variant: p_sample_step masks it at code step 0)
    ("sampling: the variance argument ignored", SA, "noise=z, variance=variance, clip_x0=clip_x0)", "noise=z, variance=\"beta_tilde\", clip_x0=clip_x0)", [RSTEP, CORE]),
    ("sampling: the model sees step + 1", SA, "eps_theta = model(xt, t).float()", "eps_theta = model(xt, t + 1).float()", [CORE]),
    ("sampling: batches ignore batch_size", SA, "if batch_size is not None and batch_size < shape[0]:", "if False:", [CORE]),
    # ---- losses: the bound's bookkeeping
    ("losses: prior_kl at code step T-2", L, "schedule.T - 1, dtype=torch.long", "schedule.T - 2, dtype=torch.long", [BOUND, CORE]),
    (
        "losses: prior_kl with the KL's arguments swapped",
        L,
        "normal_kl(mean, var.expand_as(mean), torch.zeros_like(mean), torch.ones_like(mean))",
        "normal_kl(torch.zeros_like(mean), torch.ones_like(mean), mean, var.expand_as(mean))",
        [BOUND, CORE],
    ),
    (
        "losses: kl_term with the KL's arguments swapped",
        L,
        "normal_kl(mean_q, var_q.expand_as(mean_q), mean_p, var_p.expand_as(mean_p))",
        "normal_kl(mean_p, var_p.expand_as(mean_p), mean_q, var_q.expand_as(mean_q))",
        [BOUND, CORE],
    ),
    ("losses: kl_term model variance at step t-1", L, "var_p = extract(p_variance(schedule, variance), t, xt)", "var_p = extract(p_variance(schedule, variance), t - 1, xt)", [BOUND, CORE]),
    ("losses: normal_kl without the -1", L, "(var1 + (mean1 - mean2) ** 2) / var2 - 1.0)", "(var1 + (mean1 - mean2) ** 2) / var2)", [BOUND, CORE]),
    ("losses: normal_kl log ratio flipped", L, "0.5 * (torch.log(var2) - torch.log(var1)", "0.5 * (torch.log(var1) - torch.log(var2)", [BOUND, CORE]),
    ("losses: normal_kl divides by var1", L, "(var1 + (mean1 - mean2) ** 2) / var2 - 1.0)", "(var1 + (mean1 - mean2) ** 2) / var1 - 1.0)", [BOUND, CORE]),
    (
        "losses: vlb draws x_t at code step t-1",
        L,
        "xt = q_sample(schedule, x0_b, t, generator=generator)",
        "xt = q_sample(schedule, x0_b, (t - 1).clamp(min=0), generator=generator)",
        [BOUND, CORE],
    ),
    ("losses: vlb gives the model step t+1", L, "eps_theta = model(xt, t).float()", "eps_theta = model(xt, (t + 1).clamp(max=T - 1)).float()", [BOUND, CORE]),
    ("losses: vlb without the prior term", L, "total=terms.sum(dim=1) + prior", "total=terms.sum(dim=1)", [BOUND, CORE]),
    ("losses: bits/dim without the log 2", L, "to_bpd = 1.0 / (dims * math.log(2.0))", "to_bpd = 1.0 / dims", [BOUND, CORE]),
    ("losses: bits/dim per image, not per dimension", L, "to_bpd = 1.0 / (dims * math.log(2.0))", "to_bpd = 1.0 / math.log(2.0)", [BOUND, CORE]),
    ("losses: simple_loss never samples code step 0", L, "torch.randint(0, schedule.T,", "torch.randint(1, schedule.T,", [BOUND, CORE]),
    ("losses: simple_loss never samples code step T-1", L, "torch.randint(0, schedule.T,", "torch.randint(0, schedule.T - 1,", [BOUND, CORE]),
    ("losses: simple_loss regresses x_t", L, "per_sample = (eps - eps_theta.float())", "per_sample = (xt - eps_theta.float())", [BOUND, CORE]),
    ("losses: decoder mean at code step 1", L, "t0 = torch.zeros(x1.shape[0]", "t0 = torch.ones(x1.shape[0]", [BOUND, CORE]),
    ("losses: decoder variance beta_tilde_3", L, "return schedule.posterior_variance[1]", "return schedule.posterior_variance[2]", [BOUND, CORE]),
    ("losses: decoder variance beta_2 for beta_1", L, "return schedule.betas[0]", "return schedule.betas[1]", [BOUND, CORE]),
    ("losses: decoder bins of half the width", L, "ndtr((x0 + 1 / 255 - mean) * inv_sigma))", "ndtr((x0 + 0.5 / 255 - mean) * inv_sigma))", [BOUND, CORE]),
    # (closing the top bin in ``upper`` alone is an equivalent variant: the top bin's value comes from log_sf_lower)
    ("losses: decoder's top bin from the wrong edge", L, "log_sf_lower = torch.special.log_ndtr(-(x0 - 1 / 255 - mean) * inv_sigma)", "log_sf_lower = torch.special.log_ndtr(-(x0 + 1 / 255 - mean) * inv_sigma)", [BOUND, CORE]),
    ("losses: min-SNR weights uncapped", L, "return snr.clamp(max=gamma) / snr", "return snr / snr", [CORE]),
    # ---- derivations: claims compared with copies of themselves, and the checker
    ("derivations: checker accepts numeric agreement", DV + "_core.py", "if numeric_check and _numerically_differs(left, right, rng):\n        return False", "if numeric_check:\n        return not _numerically_differs(left, right, rng)", [DERIV]),
    ("derivations: forward law read back from the claim", DV + "forward.py", "mean_t, var_t = linear_gaussian_moments(xt_from_x0, [sym.eps_1, sym.eps_2])", "mean_t, var_t = mean_coef * sym.x0, marg_var", [DERIV]),
    ("derivations: closed-form inverse read back from the claim", DV + "forward.py", "(x0_solved,) = sp.solve(sp.Eq(x_t, xt_expr), sym.x0)", "x0_solved = x0_claim", [DERIV]),
    ("derivations: posterior variance read back from the claim", DV + "posterior.py", "var_derived = -1 / (2 * a)", "var_derived = var_claim", [DERIV]),
    ("derivations: posterior mean read back from the claim", DV + "posterior.py", "mu_derived = -b / (2 * a)", "mu_derived = mu_claim", [DERIV]),
    ("derivations: the integrated KL replaced by the claimed KL", DV + "kl.py", "kl_int = kl_by_integration()", "kl_int = kl_claim", [DERIV]),
    ("derivations: kl_by_integration substitutes the variance for the sd", DV + "kl.py", "in_z = sp.Poly(sp.expand(log_ratio.subs(sym.x, mu1 + sigma1 * sym.z)), sym.z)", "in_z = sp.Poly(sp.expand(log_ratio.subs(sym.x, mu1 + sigma1**2 * sym.z)), sym.z)", [DERIV]),
    ("derivations: substituted mu_tilde replaced by the claimed eps-form", DV + "eps.py", "mu_tilde_eps = posterior_mean_expr(x0=x0_of_eps)", "mu_tilde_eps = mean_claim", [DERIV]),
    ("derivations: the decoder's bin sum replaced by 1", DV + "decoder.py", "total = sp.Add(*probs)", "total = sp.Integer(1)", [DERIV]),
    ("derivations: ELBO regrouping read back from the claim", DV + "elbo.py", "substituted = expanded.subs(bayes_substitution(S))", "substituted = build(S)", [DERIV]),
    ("derivations: ELBO symbolic-T claim dropped", DV + "elbo.py", "        split_sums(right_any),\n", "        split_sums(left_any),\n", [DERIV]),
    ("derivations: ELBO Gaussian Bayes claim dropped", DV + "elbo.py", "        step,\n        bayes,\n", "        bayes,\n        bayes,\n", [DERIV]),
    ("derivations: ELBO gap read back from the claim", DV + "elbo.py", "derived_gap = sp.log(G.p_x0) - sp.log(joint / G.q_path)", "derived_gap = claim_gap", [DERIV]),
    (
        "derivations: tower expectation replaced by the expected claimed KL",
        DV + "elbo.py",
        "lhs = expect_standard_normal(log_ratio.subs({sym.x_tm1: x_tm1_chain, sym.xt: x_t_chain}, simultaneous=True), [z1, z2])",
        "lhs = expect_standard_normal(kl_of(mu_tilde, beta_tilde, mu_theta, s2).subs(sym.xt, sp.sqrt(ab) * sym.x0 + sp.sqrt(1 - ab) * z), [z])",
        [DERIV],
    ),
    # ---- the exact-likelihood toy
    ("toy: forward covariance without the decay", DV + "toy.py", "cov = np.sqrt(abars[hi] / abars[lo]) * (1 - abars[lo])", "cov = (1 - abars[lo]) + 0 * hi", [TOY]),
    ("toy: ELBO without q's entropy", DV + "toy.py", "return float(total + 0.5 * logdet)", "return float(total)", [TOY]),
    ("toy: model joint ignores the slope", DV + "toy.py", "B[t - 1] = model.a[t - 1] * B[t]", "B[t - 1] = B[t]", [TOY]),
    ("toy: true reverse variance without the correction", DV + "toy.py", "v=V[:-1] - a * np.sqrt(alphas) * V[:-1]", "v=V[:-1]", [TOY]),
    ("toy: path KL without the log-determinants", DV + "toy.py", "- len(b) + logdet_p - logdet_q))", "- len(b)))", [TOY]),
    ("toy: KL form's L_{t-1} without the x_t variance", DV + "toy.py", "d_sq = d_mean**2 + slope**2 * (1 - ab_t)", "d_sq = d_mean**2", [TOY]),
    ("toy: eps weights without alpha", DV + "toy.py", "return b**2 / (2 * v * (1 - b) * (1 - np.cumprod(1 - b)))", "return b**2 / (2 * v * (1 - np.cumprod(1 - b)))", [TOY]),
    ("toy: L_simple minimiser without the data's second moment", DV + "toy.py", "second = abars * (data_var + data_mean**2) + g2", "second = abars * data_var + g2", [TOY]),
    ("derivations: posterior_variance_expr inverted", DV + "posterior.py", "return (1 - alpha_bar_prev) / (1 - alpha_bar) * beta", "return (1 - alpha_bar) / (1 - alpha_bar_prev) * beta", [DERIV]),
    ("derivations: eps_weight without the 2", DV + "eps.py", "return beta**2 / (2 * sigma2 * alpha * (1 - alpha_bar))", "return beta**2 / (sigma2 * alpha * (1 - alpha_bar))", [DERIV]),
]


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    untracked = subprocess.run(
        ["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for raw in files + untracked:
        if not raw:
            continue
        rel = raw.decode()
        if not (rel.startswith(("ddpm_tutor/", "tests/")) or rel in ("conftest.py", "pyproject.toml")):
            continue
        src, dst = ROOT / rel, dest / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def _pytest_fails(work: Path, tests: list[str], timeout: float) -> bool:
    """Run pytest on ``tests`` in a forked child (torch, SymPy and SciPy are already imported in
    the parent, the package is not, so the child imports the mutated files); True if it fails."""
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.chdir(work)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest

            code = pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider"])
        except BaseException:  # noqa: BLE001 - any crash of the child is a failure
            code = 3
        os._exit(int(code))
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) != 0
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise TimeoutError
        time.sleep(0.05)


def run(mutants, timeout: float) -> int:
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        work = Path(tmp)
        _copy_tree(work)
        env = {**os.environ, "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
        os.environ.update(PYTHONDONTWRITEBYTECODE="1", DDPM_TUTOR_PROFILE="smoke")
        sys.dont_write_bytecode = True
        sys.path.insert(0, str(work))
        import mpmath, numpy, scipy.stats, sympy, torch  # noqa: E401,F401 - imported once, shared by the forks
        all_tests = sorted({t for *_, tests in mutants for t in tests})
        base = subprocess.run(
            [sys.executable, "-m", "pytest", *all_tests, "-q", "-p", "no:cacheprovider"],
            cwd=work, env=env, capture_output=True, text=True,
        )
        if base.returncode != 0:
            print(base.stdout[-3000:] + base.stderr[-3000:])
            print("the unmutated package fails its tests: fix that first")
            return 2
        print(f"baseline: {' '.join(all_tests)} pass", flush=True)
        caught, missed, broken = [], [], []
        for i, (label, rel, old, new, tests) in enumerate(mutants, 1):
            path = work / rel
            original = path.read_text()
            count = original.count(old)
            if count != 1:
                broken.append(label)
                print(f"[{i:3d}] ERROR  {label}: the old text occurs {count} times in {rel}", flush=True)
                continue
            path.write_text(original.replace(old, new))
            start = time.perf_counter()
            try:
                failed = _pytest_fails(work, tests, timeout)
            except TimeoutError:
                failed = True  # a hang is a detected change too, but say so
                label += " (timed out)"
            finally:
                path.write_text(original)
            (caught if failed else missed).append(label)
            print(f"[{i:3d}] {'caught' if failed else 'MISSED'} {label}  ({time.perf_counter() - start:.0f} s)", flush=True)
        print(f"\n{len(caught)} of {len(caught) + len(missed)} mutants caught" + (f", {len(broken)} not applicable" if broken else ""))
        for label in missed:
            print(f"  missed: {label}")
        return 0 if not missed and not broken else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only the mutants whose label contains this text (several: comma-separated)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant before it counts as caught (hang)")
    args = parser.parse_args()
    wanted = [w for w in args.only.split(",") if w] or [""]
    mutants = [m for m in MUTANTS if any(w in m[0] for w in wanted)]
    if args.list:
        for label, rel, *_ in mutants:
            print(f"{label}  [{rel}]")
        return 0
    return run(mutants, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
