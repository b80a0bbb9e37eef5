"""The package as installed: what `import ddpm_tutor` loads, its version, its licence, and plain `pytest`."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT).stdout


def test_import_loads_no_sympy_until_a_proof_is_asked_for_and_has_one_version():
    out = _run("import contextlib, io, sys, ddpm_tutor as dt\n"
               "print('sympy' in sys.modules)\n"
               "print(dt.derivations.all_proofs.__name__, 'sympy' in sys.modules)\n"
               "from ddpm_tutor.__main__ import main\n"
               "with contextlib.suppress(SystemExit):\n"
               "    main(['--version'])\n")
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert out.split("\n")[:3] == ["False", "all_proofs True", f"ddpm-tutor {declared}"]


def test_licence_matches_pyproject():
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_plain_pytest_works_without_the_nbval_plugin():
    """No nbval option in pytest's addopts: `pytest tests` must not need the plugin (conftest sets it when present)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:nbval", "-p", "no:cacheprovider", "--collect-only",
                          "-q", "tests/test_files.py"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
