"""pytest settings shared by the unit tests and the notebooks (nbval).

Notebook kernels inherit this process's environment, so the training chapter trains in the
``smoke`` profile (seconds) under ``pytest --nbval`` unless DDPM_TUTOR_PROFILE says otherwise.
"""

import os
from pathlib import Path

os.environ.setdefault("DDPM_TUTOR_PROFILE", "smoke")

SANITIZE = Path(__file__).parent / "tests" / "sanitize.cfg"


def pytest_configure(config):
    # nbval compares notebook outputs after these substitutions (memory addresses, tqdm rates). Set here rather
    # than in addopts, so that plain `pytest tests` runs where the nbval plugin is not installed.
    if getattr(config.option, "nbval_sanitize_with", "absent") is None:
        config.option.nbval_sanitize_with = str(SANITIZE)
    # The unit tests work on tiny tensors, where a second thread costs more than it gives (much more on a
    # shared machine: 12 ms against 0.04 ms for one small op). The notebooks run in their own kernels.
    import torch

    torch.set_num_threads(int(os.environ.get("DDPM_TUTOR_TEST_THREADS", "1")))
