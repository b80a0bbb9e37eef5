"""pytest settings shared by the unit tests and the notebooks (nbval).

Notebook kernels inherit this process's environment, so the training chapter trains in the
``smoke`` profile (seconds) under ``pytest --nbval`` unless DDPM_TUTOR_PROFILE says otherwise.
"""

import os

os.environ.setdefault("DDPM_TUTOR_PROFILE", "smoke")
