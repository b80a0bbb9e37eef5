"""Train one of the variants of a profile that the README's tables compare.

    python scripts/train_variant.py NAME --out runs/NAME      # --list shows the names
    python -m ddpm_tutor sample --checkpoint runs/NAME/checkpoint.pt --n 1000 --seed 0 \\
        --out samples.png --quality-json quality.json

Each variant is a profile with a few fields overridden that the ``train`` command has no
option for (EMA decay, noise schedule, an older profile; batch size, before ``--batch-size``). The
overrides are written out in full, so a variant stays the run the README measured when a
profile changes later. Like ``python -m ddpm_tutor train``, running it again resumes.
"""

from __future__ import annotations

import argparse
import sys

import ddpm_tutor as dt

# The gpu profile before it took the cpu profile's network: the default U-Net (1.12 M parameters),
# T = 1000, lr 1e-3, EMA 0.999, 8,000 steps.
_OLD_GPU = dict(steps=8000, lr=1e-3, ema_decay=0.999, T=1000, unet=dt.UNetConfig())

VARIANTS: dict[str, tuple[str, dict]] = {
    "gpu-default-unet": ("gpu", {**_OLD_GPU, "loss_weighting": "none", "min_snr_gamma": 5.0}),
    "gpu-default-unet-min-snr-1": ("gpu", {**_OLD_GPU, "loss_weighting": "min_snr", "min_snr_gamma": 1.0}),
    "gpu-cosine-schedule": ("gpu", {"steps": 10000, "batch_size": 128, "lr": 2e-3, "schedule": "cosine"}),
    "gpu-cosine-schedule-lr-3e-3": ("gpu", {"steps": 10000, "batch_size": 128, "lr": 3e-3, "schedule": "cosine"}),
    "gpu-batch-256-cosine-schedule": ("gpu", {"steps": 10000, "batch_size": 256, "lr": 2e-3, "schedule": "cosine"}),
    "gpu-batch-512-cosine-schedule": ("gpu", {"steps": 10000, "batch_size": 512, "lr": 2e-3, "schedule": "cosine"}),
    "cpu-batch-64": ("cpu", {"lr": 2e-3, "batch_size": 64, "steps": 9000}),
    "cpu-ema-0.9995": ("cpu", {"lr": 2e-3, "ema_decay": 0.9995}),
    "cpu-min-snr-0.5": ("cpu", {"lr": 2e-3, "min_snr_gamma": 0.5}),
    "cpu-cosine-schedule": ("cpu", {"lr": 2e-3, "schedule": "cosine"}),
    "cpu-lr-4e-3-cosine-schedule": ("cpu", {"lr": 4e-3, "schedule": "cosine"}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", choices=sorted(VARIANTS), help="the variant to train")
    parser.add_argument("--out", help="folder for checkpoint.pt (created if missing)")
    parser.add_argument("--data", default=None, help="folder with the MNIST IDX files (default: $DDPM_TUTOR_DATA)")
    parser.add_argument("--list", action="store_true", help="print every variant's profile and overrides")
    args = parser.parse_args(argv)
    if args.list:
        for name, (profile, overrides) in VARIANTS.items():
            print(f"{name}: --profile {profile}, " + ", ".join(f"{k}={v!r}" for k, v in overrides.items()))
        return 0
    if not args.name or not args.out:
        parser.error("give a variant NAME and --out (or --list)")
    profile, overrides = VARIANTS[args.name]
    config = dt.profile_config(profile, **overrides)
    result = dt.train(config, out_dir=args.out, data_root=args.data)
    print(f"trained {result.steps_run} steps in {result.seconds / 60:.1f} min; last loss {result.history['loss'][-1]:.4f}")
    print(f"checkpoint: {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
