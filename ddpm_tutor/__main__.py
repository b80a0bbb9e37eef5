"""Command line: ``python -m ddpm_tutor {check,train,sample,export}``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import __version__


def _cmd_check(args: argparse.Namespace) -> int:
    """Prove every identity of the book with SymPy and print what was proved."""
    from .derivations import all_proofs

    proofs = all_proofs()
    for proof in proofs:
        print(proof.as_text())
        print()
    print(f"{len(proofs)} identities proved.")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Train a U-Net on MNIST with a profile; checkpoints go to --out and a rerun resumes."""
    from .training import PROFILE_NOTES, profile_config, resolve_profile, train

    profile = resolve_profile(args.profile)
    overrides = {name: getattr(args, name) for name in ("steps", "batch_size", "seed", "lr", "compile", "loss_weighting", "min_snr_gamma")
                 if getattr(args, name) is not None}
    base = profile_config(profile)
    unet_overrides = {}
    if args.T is not None:  # the schedule and the network's time embedding must agree on T
        overrides["T"] = unet_overrides["T"] = args.T
    if args.channels is not None:
        if len(args.channels) != len(base.unet.channels):
            raise SystemExit(
                f"--channels: the {profile} profile's U-Net has {len(base.unet.channels)} resolutions "
                f"{tuple(base.unet.channels)}; give that many comma-separated widths"
            )
        unet_overrides["channels"] = args.channels
    try:  # the configs validate every field; their messages name it
        if unet_overrides:
            overrides["unet"] = replace(base.unet, **unet_overrides)
        config = replace(base, **overrides)
    except ValueError as err:
        raise SystemExit(f"train: {err}") from None
    print(f"profile {profile}: {PROFILE_NOTES[profile]}")
    changed = {k: v for k, v in overrides.items() if k != "unet"} | {f"unet.{k}": v for k, v in unet_overrides.items()}
    if changed:
        print("overridden: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    if args.init_from is not None:
        print(f"fine-tuning: starting from the EMA weights of {args.init_from}")
    try:
        result = train(config, data_root=args.data, out_dir=args.out, resume=not args.no_resume, device=args.device,
                       init_from=args.init_from)
    except (OSError, ValueError, FloatingPointError) as err:  # a missing or mismatched checkpoint, an exploded run,
        raise SystemExit(f"train: {err}") from None  # a full disk: the message says what to do
    last = result.history["loss"][-1] if result.history["loss"] else float("nan")
    print(f"trained {result.steps_run} steps in {result.seconds / 60:.1f} min; last loss {last:.4f}")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    """Draw samples from a checkpoint with Algorithm 2 and save them as an image grid (the format --out names)."""
    import torch

    from ._files import check_output_file, image_format
    from ._tensor import resolve_device
    from .plotting import save_image_grid
    from .sampling import sample
    from .training import load_model, load_pretrained

    try:  # everything that can be checked before minutes of sampling
        device = str(resolve_device(args.device))
        check_output_file(args.out, "--out")
        image_format(args.out)
        if args.quality_json:
            check_output_file(args.quality_json, "--quality-json")
    except ValueError as err:
        raise SystemExit(f"sample: {err}") from None
    try:
        if args.checkpoint == "pretrained":
            model, schedule = load_pretrained(device)
        else:
            model, schedule, _ = load_model(args.checkpoint, which="model" if args.raw else "ema", device=device)
    except (FileNotFoundError, ValueError) as err:  # missing, corrupt or mismatched: the message says what to do
        raise SystemExit(f"sample: {err}") from None
    generator = torch.Generator(device=device).manual_seed(args.seed)
    shape = (args.n, model.config.in_channels, model.config.image_size, model.config.image_size)
    batch = min(args.batch_size or args.n, args.n)
    start = time.perf_counter()
    try:
        x = sample(model, schedule, shape, generator=generator, variance=args.variance, batch_size=batch)
    except FloatingPointError as err:  # NaN samples: no black image, and a non-zero exit status
        raise SystemExit(f"sample: {err}") from None
    seconds = time.perf_counter() - start
    path = save_image_grid(x, args.out)
    batches = f", in batches of {batch}" if batch < args.n else ""
    print(f"wrote {args.n} samples to {path} ({args.n} x {schedule.T} steps in {seconds:.0f} s on {device}{batches})")
    if args.quality or args.quality_json:
        from .metrics import sample_quality

        quality = sample_quality(x)
        print(quality)
        print("target (>= 90% confident, every digit >= 5%):", "met" if quality.passes() else "NOT met")
        if args.quality_json:
            record = {
                **quality.to_dict(),
                "checkpoint": args.checkpoint,
                "weights": "raw" if args.raw else "ema",
                "variance": args.variance,
                "seed": args.seed,
                "batch_size": batch,
                "sampling_seconds": round(seconds, 1),
                "device": str(device),
                "torch_version": torch.__version__,
            }
            Path(args.quality_json).write_text(json.dumps(record, indent=2) + "\n")
            print(f"wrote {args.quality_json}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Write a slim, shippable copy of a checkpoint and its sha256 record."""
    from .training import export_checkpoint

    note = {"command": args.command_note} if args.command_note else None
    try:
        record = export_checkpoint(args.checkpoint, args.out, note=note)
    except (OSError, ValueError) as err:  # the message names the problem and the fix
        raise SystemExit(f"export: {err}") from None
    print(f"wrote {args.out} ({record['bytes'] / 1e6:.1f} MB, sha256 {record['sha256']})")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers such as 16,64,128, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddpm_tutor",
        description="ddpm-tutor: denoising diffusion probabilistic models, proved and tested.",
    )
    parser.add_argument("--version", action="version", version=f"ddpm-tutor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("check", help="prove the book's identities with SymPy and print them")
    check.set_defaults(func=_cmd_check)

    tr = sub.add_parser(
        "train",
        help="train the U-Net on MNIST (Algorithm 1)",
        description="Train the epsilon-prediction U-Net on MNIST (Algorithm 1: L_simple, with min-SNR weights in "
        "the cpu profile). A checkpoint is written to "
        "OUT/checkpoint.pt every few hundred steps; running the same command again resumes from it.",
    )
    tr.add_argument("--profile", choices=["gpu", "cpu", "smoke"], default=None,
                    help="size of the run: gpu (minutes on a GPU), cpu (under 45 min on 2 cores), smoke (seconds). "
                    "Default: $DDPM_TUTOR_PROFILE, else gpu with CUDA and cpu without")
    tr.add_argument("--out", required=True, help="folder for checkpoint.pt (created if missing)")
    tr.add_argument("--steps", type=_positive_int, default=None, help="override the profile's number of optimiser steps (the cpu and gpu profiles decay the "
                    "learning rate over them, so a run resumes only with the steps it started with)")
    tr.add_argument("--batch-size", type=_positive_int, default=None,
                    help="override the profile's images per step (128 in the gpu and cpu profiles; the reference checkpoint: 512)")
    tr.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    tr.add_argument("--lr", type=float, default=None, help="override the profile's peak learning rate, e.g. 2e-3")
    tr.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the model (default: the profile's choice)")
    tr.add_argument("--T", type=_positive_int, default=None,
                    help="override the number of diffusion steps T (schedule and network together; "
                    "a linear schedule keeps beta_t * T fixed)")
    tr.add_argument("--channels", type=_channels, default=None, metavar="C1,C2,...",
                    help="override the U-Net's widths per resolution, e.g. 16,64,128")
    tr.add_argument("--loss-weighting", choices=["none", "min_snr"], default=None,
                    help="override the loss: none (L_simple, Algorithm 1) or min_snr (min-SNR-gamma weights)")
    tr.add_argument("--min-snr-gamma", type=float, default=None,
                    help="override gamma of the min-SNR weights")
    tr.add_argument("--data", default=None,
                    help="folder with the MNIST IDX files (default: $DDPM_TUTOR_DATA, else download to the user cache)")
    tr.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default: cuda if available)")
    tr.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint.pt exists")
    tr.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                    help="fine-tune: start from the EMA weights of this checkpoint ('pretrained': the reference "
                    "checkpoint) instead of random ones, with a fresh optimiser and learning-rate schedule; its network "
                    "and noise schedule must be the profile's (give the same overrides). Use a smaller --lr, e.g. 2e-4")
    tr.set_defaults(func=_cmd_train)

    sa = sub.add_parser(
        "sample",
        help="draw samples from a checkpoint (Algorithm 2) into an image grid (PNG, JPEG, ...)",
        description="Start from x_T ~ N(0, I) and denoise step by step with the checkpoint's EMA weights.",
    )
    sa.add_argument("--checkpoint", required=True,
                    help="a checkpoint.pt written by `train`, or 'pretrained' for the reference model shipped in the package")
    sa.add_argument("--n", type=_positive_int, default=64, help="number of samples (default 64)")
    sa.add_argument("--out", default="samples.png",
                    help="image file to write, in the format its suffix names: .png, .jpg, ... (default samples.png)")
    sa.add_argument("--seed", type=int, default=0, help="seed of the sampler's generator (default 0)")
    sa.add_argument("--batch-size", type=_positive_int, default=None,
                    help="draw the samples in batches of this many (default: all N at once). Smaller batches bound "
                    "the memory and on a CPU can take less time per image; other batch sizes draw other images "
                    "from the same seed")
    sa.add_argument("--variance", choices=["beta", "beta_tilde"], default="beta_tilde",
                    help="sigma_t^2 of the reverse steps (default beta_tilde)")
    sa.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    sa.add_argument("--quality", action="store_true",
                    help="also report the classifier's confident fraction and class histogram")
    sa.add_argument("--quality-json", default=None, metavar="PATH",
                    help="also write the quality numbers (and how they were obtained) to this JSON file; implies --quality")
    sa.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    sa.set_defaults(func=_cmd_sample)

    ex = sub.add_parser(
        "export",
        help="write a slim copy of a checkpoint (weights and configs, no optimiser) with its sha256",
        description="Strip the optimiser state from a training checkpoint and record the file's sha256 in a .json beside it.",
    )
    ex.add_argument("--checkpoint", required=True, help="checkpoint.pt written by `train`")
    ex.add_argument("--out", required=True, help="the slim .pt to write (its .json record goes beside it)")
    ex.add_argument("--command-note", default=None, help="the command that trained the checkpoint, kept in the record")
    ex.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
