"""Mutation test: apply plausible wrong variants of the package's formulas one at a time and
check that the unit tests catch each.

    python scripts/mutation_test.py                 # every mutant, prints caught / missed
    python scripts/mutation_test.py --only losses   # the mutants whose label contains 'losses'
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
    (
        "losses: vlb draws x_t at code step t-1",
        L,
        "xt = q_sample(schedule, x0_b, t, generator=generator)",
        "xt = q_sample(schedule, x0_b, (t - 1).clamp(min=0), generator=generator)",
        [BOUND, CORE],
    ),
    ("losses: bits/dim without the log 2", L, "to_bpd = 1.0 / (dims * math.log(2.0))", "to_bpd = 1.0 / dims", [BOUND, CORE]),
    ("losses: simple_loss never samples code step 0", L, "torch.randint(0, schedule.T,", "torch.randint(1, schedule.T,", [BOUND, CORE]),
    ("losses: simple_loss never samples code step T-1", L, "torch.randint(0, schedule.T,", "torch.randint(0, schedule.T - 1,", [BOUND, CORE]),
    ("losses: decoder mean at code step 1", L, "t0 = torch.zeros(x1.shape[0]", "t0 = torch.ones(x1.shape[0]", [BOUND, CORE]),
    ("losses: decoder variance beta_tilde_3", L, "return schedule.posterior_variance[1]", "return schedule.posterior_variance[2]", [BOUND, CORE]),
    ("losses: decoder variance beta_2 for beta_1", L, "return schedule.betas[0]", "return schedule.betas[1]", [BOUND, CORE]),
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
    parser.add_argument("--only", default="", help="run only the mutants whose label contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant before it counts as caught (hang)")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if args.only in m[0]]
    if args.list:
        for label, rel, *_ in mutants:
            print(f"{label}  [{rel}]")
        return 0
    return run(mutants, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
