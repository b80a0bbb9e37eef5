"""ddpm-tutor: denoising diffusion probabilistic models (Ho et al., 2020), every formula proved and tested.

The modules follow the book's table of contents:

=====================  ===============================================  =========
module                 what it holds                                    chapter
=====================  ===============================================  =========
``schedules``          NoiseSchedule, linear_schedule, cosine_schedule  1-2
``forward``            q_step, q_sample                                 1-2
``posterior``          q_posterior, predict_x0                          3
``reverse``            p_mean, p_sample_step                            4
``losses``             the bound's terms, simple_loss                   5-6
``derivations``        the SymPy proofs, one function per identity      1-6
``data``               MNIST in IDX form: download, verify, load        7
``datasets``           load_dataset: Fashion-MNIST, CIFAR-10, folders   13
``unet``               UNetConfig, UNet (eps_theta)                     7
``config``             TrainConfig, the gpu/cpu/smoke profiles          7
``checkpoints``        save, load, export; the reference weights        7
``training``           train (Algorithm 1)                              7
``distributed``        torchrun / DistributedDataParallel set-up        13
``sampling``           sample, SAMPLERS                                 8, 11
``samplers``           ddpm, ddim, dpm_solver_pp(_sde), time steps      8, 11
``metrics``            the MNIST classifier that judges samples         8
``evaluation``         FID, KID, precision/recall, memorisation         10
                       (``import ddpm_tutor.evaluation``: torchmetrics)
``guidance``           guided (classifier-free guidance)                12
=====================  ===============================================  =========

Index convention, stated once: code step ``t = 0..T-1`` is the paper's step ``t + 1 = 1..T``.
"""

from .forward import q_sample, q_step
from .losses import decoder_nll, kl_term, normal_kl, prior_kl, simple_loss, vlb_bits_per_dim
from .posterior import predict_x0, q_posterior
from .reverse import p_mean, p_sample_step, p_variance
from .sampling import SAMPLERS, sample
from .schedules import NoiseSchedule, cosine_schedule, linear_schedule, schedule_from_betas
from .unet import UNet, UNetConfig
from .config import TrainConfig, profile_config, resolve_profile
from .checkpoints import load_model, load_pretrained
from .training import train
from . import data, datasets, guidance, metrics, plotting, records, samplers


def _version() -> str:
    """The version pyproject.toml declares: from the installed package's metadata, else from the checkout's file."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ddpm-tutor")
    except PackageNotFoundError:  # imported from a checkout (PYTHONPATH) without being installed
        import re
        from pathlib import Path

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return found.group(1) if found else "unknown"


__version__ = _version()


def __getattr__(name: str):
    # The SymPy proofs load on first use (dt.derivations), so that `import ddpm_tutor` does not import SymPy.
    if name == "derivations":
        import importlib

        return importlib.import_module(".derivations", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "NoiseSchedule",
    "linear_schedule",
    "cosine_schedule",
    "schedule_from_betas",
    "q_step",
    "q_sample",
    "q_posterior",
    "predict_x0",
    "p_mean",
    "p_variance",
    "p_sample_step",
    "sample",
    "SAMPLERS",
    "samplers",
    "simple_loss",
    "normal_kl",
    "prior_kl",
    "kl_term",
    "decoder_nll",
    "vlb_bits_per_dim",
    "UNet",
    "UNetConfig",
    "TrainConfig",
    "train",
    "profile_config",
    "resolve_profile",
    "load_model",
    "load_pretrained",
    "data",
    "derivations",
    "metrics",
    "guidance",
    "plotting",
    "records",
]
