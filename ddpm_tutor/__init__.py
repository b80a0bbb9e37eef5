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
``unet``               UNetConfig, UNet (eps_theta)                     7
``training``           TrainConfig, profiles, train, checkpoints        7
``sampling``           sample (Algorithm 2)                             8
``metrics``            the MNIST classifier that judges samples         8
``guidance``           guided (classifier-free guidance)                12
=====================  ===============================================  =========

Index convention, stated once: code step ``t = 0..T-1`` is the paper's step ``t + 1 = 1..T``.
"""

from .forward import q_sample, q_step
from .losses import decoder_nll, kl_term, normal_kl, prior_kl, simple_loss, vlb_bits_per_dim
from .posterior import predict_x0, q_posterior
from .reverse import p_mean, p_sample_step, p_variance
from .sampling import sample
from .schedules import NoiseSchedule, cosine_schedule, linear_schedule, schedule_from_betas
from .unet import UNet, UNetConfig
from .training import TrainConfig, load_model, load_pretrained, profile_config, resolve_profile, train
from . import data, derivations, guidance, metrics, plotting

__version__ = "0.1.0"

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
]
