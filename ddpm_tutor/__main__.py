"""Command line: ``python -m ddpm_tutor {check,train,sample,evaluate,export}``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import __version__
from .samplers import SAMPLERS


def _cmd_check(args: argparse.Namespace) -> int:
    """Prove every identity of the book with SymPy and print what was proved."""
    from .derivations import all_proofs

    proofs = all_proofs()
    for proof in proofs:
        print(proof.as_text())
        print()
    print(f"{len(proofs)} identities proved.")
    return 0


def train_config(args: argparse.Namespace):
    """The profile name, the TrainConfig and the overridden fields that ``train``'s arguments ask for."""
    from .config import apply_overrides, profile_config, resolve_profile

    profile = resolve_profile(args.profile)
    base = profile_config(profile)
    if args.channels is not None and len(args.channels) != len(base.unet.channels):
        raise SystemExit(
            f"--channels: the {profile} profile's U-Net has {len(base.unet.channels)} resolutions "
            f"{tuple(base.unet.channels)}; give that many comma-separated widths"
        )
    # the explicit options are shorthands for --set; --set comes last, so it wins
    shorthands = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "lr": args.lr,
                  "compile": args.compile, "loss_weighting": args.loss_weighting, "min_snr_gamma": args.min_snr_gamma,
                  "label_dropout": args.label_dropout, "T": args.T,
                  "unet.channels": ",".join(map(str, args.channels)) if args.channels else None,
                  # a class-conditional U-Net for classifier-free guidance (chapter 12)
                  "unet.num_classes": 10 if args.conditional else None}
    settings = [f"{k}={v}" for k, v in shorthands.items() if v is not None]
    if args.image_size is not None and args.dataset is None:
        raise SystemExit("train: --image-size goes with --dataset folder:PATH (the other datasets have a fixed size)")
    if args.dataset is not None:  # the data fixes the U-Net's channels and image size
        settings += _dataset_settings(args)
    settings += list(args.set or [])
    try:  # the configs validate every field; their messages name it
        config, changed = apply_overrides(base, settings)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"train: {err}") from None
    return profile, config, changed


def _dataset_settings(args: argparse.Namespace) -> list[str]:
    """``--set`` settings for ``--dataset``: its name and the U-Net's channels and image size, read from the data."""
    from .data import DatasetError
    from .datasets import dataset_shape, load_dataset

    try:
        images, _ = load_dataset(args.dataset, "train", root=args.data, image_size=args.image_size)
    except (DatasetError, ValueError, TypeError) as err:
        raise SystemExit(f"train: --dataset {args.dataset}: {err}") from None
    shape = dataset_shape(images)
    return [f"dataset={args.dataset}"] + [f"unet.{k}={v}" for k, v in shape.items()]


def _cmd_train(args: argparse.Namespace) -> int:
    """Train a U-Net on MNIST with a profile; checkpoints go to --out and a rerun resumes. Under
    ``torchrun --nproc_per_node=N`` it trains in N processes (:mod:`ddpm_tutor.distributed`); rank 0 prints."""
    from . import distributed
    from .config import PROFILE_NOTES
    from .training import train

    profile, config, changed = train_config(args)
    say = print if int(os.environ.get("RANK", "0")) == 0 else (lambda *a, **k: None)  # rank 0 speaks
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    say(f"profile {profile}: {PROFILE_NOTES[profile]}" + (f" ({world_size} processes)" if world_size > 1 else ""))
    if changed:
        say("overridden: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    if args.init_from is not None:
        say(f"fine-tuning: starting from the EMA weights of {args.init_from}")
    try:
        result = train(config, data_root=args.data, out_dir=args.out, resume=not args.no_resume, device=args.device,
                       init_from=args.init_from)
    except (OSError, ValueError, FloatingPointError) as err:  # a missing or mismatched checkpoint, an exploded run,
        raise SystemExit(f"train: {err}") from None  # a full disk, a batch that does not divide: the message says what to do
    finally:
        distributed.teardown()  # leave the process group torchrun's run joined (nothing to do in one process)
    last = result.history["loss"][-1] if result.history["loss"] else float("nan")
    say(f"trained {result.steps_run} steps in {result.seconds / 60:.1f} min; last loss {last:.4f}")
    say(f"checkpoint: {result.checkpoint}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    """Draw samples from a checkpoint with a sampler (Algorithm 2 by default) and save them as an image grid
    (the format --out names)."""
    import torch

    from ._tensor import resolve_device
    from .checkpoints import load_model, load_pretrained
    from .files import atomic_write_text, check_output_file, image_format
    from .plotting import save_image_grid
    from .sampling import sample

    try:  # everything that can be checked before minutes of sampling
        device = str(resolve_device(args.device))
        check_output_file(args.out, "--out")
        image_format(args.out)
        if args.quality_json:
            check_output_file(args.quality_json, "--quality-json")
    except ValueError as err:
        raise SystemExit(f"sample: {err}") from None
    dataset = "mnist"  # what the checkpoint was trained on: it picks the classifier of --quality
    try:
        if args.checkpoint == "pretrained" or args.checkpoint.startswith("pretrained:"):
            name = args.checkpoint.partition(":")[2] or "mnist"
            model, schedule = load_pretrained(name, device=device)
            dataset = name.removesuffix("-conditional")
        else:
            model, schedule, ckpt = load_model(args.checkpoint, which="model" if args.raw else "ema", device=device)
            dataset = ckpt["train_config"].get("dataset", "mnist")
    except (FileNotFoundError, ValueError) as err:  # missing, corrupt or mismatched: the message says what to do
        raise SystemExit(f"sample: {err}") from None
    num_classes = model.config.num_classes
    if args.labels is not None and num_classes is None:
        raise SystemExit("sample: --labels needs a class-conditional checkpoint (trained with `train --conditional`)")
    if args.labels is None and args.guidance != 1.0:
        raise SystemExit("sample: --guidance needs --labels (the digits to draw), e.g. --labels 0123456789")
    if args.labels is not None and max(args.labels) >= num_classes:
        raise SystemExit(f"sample: --labels must be digits 0..{num_classes - 1}, got {''.join(map(str, args.labels))}")
    if args.guidance < 0:
        raise SystemExit(f"sample: --guidance must be >= 0 (0 unconditional, 1 conditional, > 1 guided), got {args.guidance}")
    n = args.n if args.n is not None else (len(args.labels) if args.labels is not None else 64)
    labels = None
    if args.labels is not None:  # the digits repeat until there are n of them: 0123456789 0123456789 ...
        labels = torch.tensor([args.labels[i % len(args.labels)] for i in range(n)], dtype=torch.long)
    args.n = n
    generator = torch.Generator(device=device).manual_seed(args.seed)
    shape = (args.n, model.config.in_channels, model.config.image_size, model.config.image_size)
    batch = min(args.batch_size or args.n, args.n)
    start = time.perf_counter()
    try:  # the sampler's options are validated there (the messages name the option); NaN samples stop it,
        x = sample(model, schedule, shape, sampler=args.sampler, steps=args.steps, eta=args.eta, generator=generator,
                   variance=args.variance, batch_size=batch, labels=labels, guidance=args.guidance)
    except (ValueError, FloatingPointError) as err:  # so no black image is written, and the exit status is non-zero
        raise SystemExit(f"sample: {err}") from None
    seconds = time.perf_counter() - start
    path = save_image_grid(x, args.out, nrow=len(args.labels) if args.labels is not None else None)
    batches = f", in batches of {batch}" if batch < args.n else ""
    nfe = args.steps or schedule.T
    print(f"wrote {args.n} samples to {path} ({args.sampler}, {args.n} x {nfe} network evaluations in {seconds:.0f} s "
          f"on {device}{batches})")
    if args.quality or args.quality_json:
        from .metrics import CLASSIFIER_DATASETS, sample_quality

        if dataset not in CLASSIFIER_DATASETS:
            raise SystemExit(f"sample: --quality needs a shipped classifier, and there is none for {dataset} (only for "
                             f"{', '.join(CLASSIFIER_DATASETS)}); the samples were written to {path}")
        quality = sample_quality(x, **({"dataset": dataset} if dataset != "mnist" else {}))
        print(quality)
        if labels is not None:
            print(f"classified as the requested digit: {(quality.predictions == labels).double().mean().item():.1%}")
        print("target (>= 90% confident, every digit >= 5%):", "met" if quality.passes() else "NOT met")
        if args.quality_json:
            record = {
                **quality.to_dict(),
                "checkpoint": args.checkpoint,
                **({"dataset": dataset} if dataset != "mnist" else {}),
                **({"labels": "".join(map(str, args.labels)), "guidance": args.guidance,
                    "requested_fraction": (quality.predictions == labels).double().mean().item()} if labels is not None else {}),
                "weights": "raw" if args.raw else "ema",
                "sampler": args.sampler,
                "steps": nfe,
                "eta": args.eta,
                "variance": args.variance or ("beta_tilde" if args.sampler == "ddpm" else None),
                "seed": args.seed,
                "batch_size": batch,
                "sampling_seconds": round(seconds, 1),
                "device": str(device),
                "torch_version": torch.__version__,
            }
            atomic_write_text(args.quality_json, json.dumps(record, indent=2) + "\n")
            print(f"wrote {args.quality_json}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Draw N samples from a checkpoint and measure them: FID, KID, precision/recall, each beside its floor."""
    import torch

    from ._tensor import resolve_device
    from .checkpoints import load_model, load_pretrained
    from .evaluation import evaluate
    from .files import atomic_write_text

    json_path = Path(args.json) if args.json else None
    if json_path is not None and not json_path.parent.is_dir():  # fail now, not after minutes of sampling
        raise SystemExit(f"evaluate: --json {args.json}: folder {json_path.parent} does not exist; create it first")
    sampler_kwargs = {name: getattr(args, name) for name in ("variance", "sampler", "steps", "eta") if getattr(args, name) is not None}
    dataset = "mnist"  # what the checkpoint was trained on: its classifier, test set and training set measure it
    trained: dict = {}  # how long a checkpoint file was trained, for the record
    try:  # a device that is not there, a missing, corrupt or mismatched checkpoint: one line saying what to do
        device = str(resolve_device(args.device))
        if args.checkpoint == "pretrained":
            model, schedule = load_pretrained(device=device)
        else:
            model, schedule, ckpt = load_model(args.checkpoint, which="model" if args.raw else "ema", device=device)
            dataset = ckpt["train_config"].get("dataset", "mnist")
            trained = {"train_step": int(ckpt["step"]), "train_seconds": round(float(ckpt.get("train_seconds", 0)), 1)}
        from .metrics import classifier_path

        classifier_path(dataset)  # a dataset without a shipped classifier: refused before minutes of sampling
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"evaluate: {err}") from None
    generator = torch.Generator(device=device).manual_seed(args.seed)
    try:
        record = evaluate(model, schedule, n=args.n, generator=generator, batch_size=args.batch_size,
                          floor_draws=args.floor_draws, inception=args.inception, dataset=dataset, **sampler_kwargs)
    except (RuntimeError, FloatingPointError) as err:  # e.g. --inception without its weights, NaN samples
        raise SystemExit(f"evaluate: {err}") from None
    print(record)
    if json_path is not None:
        out = {
            **record.to_dict(),
            "checkpoint": args.checkpoint,
            **({"dataset": dataset} if dataset != "mnist" else {}),
            **trained,
            "weights": "raw" if args.raw else "ema",
            "seed": args.seed,
            "device": str(device),
            "torch_version": torch.__version__,
            "command": "python -m ddpm_tutor evaluate " + " ".join(sys.argv[2:] if args.argv is None else args.argv),
        }
        atomic_write_text(json_path, json.dumps(out, indent=2) + "\n")  # the old file or the new one
        print(f"wrote {json_path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Write a slim, shippable copy of a checkpoint and its sha256 record."""
    from .checkpoints import export_checkpoint

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


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (a standard deviation needs two draws), got {value}")
    return value


def _channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers such as 16,64,128, got {text!r}") from None


def _digits(text: str) -> tuple[int, ...]:
    if not text or not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a string of digits such as 0123456789 or 7, got {text!r}")
    return tuple(int(c) for c in text)


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
        help="train the U-Net on MNIST (Algorithm 1); under torchrun --nproc_per_node=N in N processes",
        description="Train the epsilon-prediction U-Net on MNIST (Algorithm 1: L_simple, with min-SNR weights in "
        "the cpu profile). A checkpoint is written to "
        "OUT/checkpoint.pt every few hundred steps; running the same command again resumes from it. "
        "`torchrun --nproc_per_node=N -m ddpm_tutor train ...` trains in N processes with DistributedDataParallel "
        "(one GPU each, or CPU processes), splitting the global --batch-size among them.",
    )
    tr.add_argument("--profile", choices=["gpu", "cpu", "smoke"], default=None,
                    help="size of the run: gpu (minutes on a GPU), cpu (under 45 min on 2 cores), smoke (seconds). "
                    "Default: $DDPM_TUTOR_PROFILE, else gpu with CUDA and cpu without")
    tr.add_argument("--out", required=True, help="folder for checkpoint.pt (created if missing)")
    tr.add_argument("--steps", type=_positive_int, default=None, help="override the profile's number of optimiser steps (the cpu and gpu profiles decay the "
                    "learning rate over them, so a run resumes only with the steps it started with)")
    tr.add_argument("--batch-size", type=_positive_int, default=None,
                    help="override the profile's images per step (128 in the gpu and cpu profiles; the reference "
                    "checkpoint: 512); under torchrun the global batch, split evenly among the processes (a multiple of their number)")
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
    tr.add_argument("--set", action="append", default=None, metavar="FIELD=VALUE",
                    help="set any TrainConfig field, or a UNetConfig field as unet.FIELD (repeatable), e.g. "
                    "--set ema_decay=0.9995 --set schedule=cosine --set unet.channels=16,64,128; T sets "
                    "unet.T too. Applied after the options above; the configs check every value")
    tr.add_argument("--conditional", action="store_true",
                    help="train a class-conditional U-Net (unet.num_classes=10) with label dropout, for classifier-free "
                    "guidance: `sample --labels 0123456789 --guidance 3` (chapter 12)")
    tr.add_argument("--label-dropout", type=float, default=None,
                    help="with --conditional: the probability of replacing a label by 'no label' (default 0.1)")
    tr.add_argument("--dataset", default=None, metavar="NAME",
                    help="what to train on: mnist (the default), fashion-mnist, cifar10, or folder:PATH (every image "
                    "under PATH; with --image-size); the U-Net's channels and image size follow the data, and the "
                    "checkpoint records the name")
    tr.add_argument("--image-size", type=_positive_int, default=None, metavar="S",
                    help="with --dataset folder:PATH: resize each image's shorter side to S and centre-crop S x S "
                    "(S divisible by 4 for the cpu and gpu profiles' U-Net)")
    tr.add_argument("--data", default=None,
                    help="folder with the dataset's files, or one subfolder per dataset (default: $DDPM_TUTOR_DATA, "
                    "else download to the user cache)")
    tr.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default: cuda if available)")
    tr.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint.pt exists")
    tr.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                    help="fine-tune: start from the EMA weights of this checkpoint ('pretrained': the reference "
                    "checkpoint) instead of random ones, with a fresh optimiser and learning-rate schedule; its network "
                    "and noise schedule must be the profile's (give the same overrides). Use a smaller --lr, e.g. 2e-4")
    tr.set_defaults(func=_cmd_train)

    sa = sub.add_parser(
        "sample",
        help="draw samples from a checkpoint (Algorithm 2, DDIM, DPM-Solver++) into an image grid (PNG, JPEG, ...)",
        description="Start from x_T ~ N(0, I) and denoise step by step with the checkpoint's EMA weights, "
        "with all T steps of Algorithm 2 (the default) or a faster sampler in --steps network evaluations.",
    )
    sa.add_argument("--checkpoint", required=True,
                    help="a checkpoint.pt written by `train`, or 'pretrained' for the reference model shipped in the package "
                    "('pretrained:mnist-conditional' for the class-conditional one, 'pretrained:fashion-mnist' for Fashion-MNIST)")
    sa.add_argument("--n", type=_positive_int, default=None,
                    help="number of samples (default 64, or the number of --labels)")
    sa.add_argument("--labels", type=_digits, default=None, metavar="DIGITS",
                    help="class-conditional checkpoints only: the digits to draw, as one string, e.g. 0123456789; they "
                    "repeat to fill --n (0123456789 0123456789 ...), and the grid has one column per digit")
    sa.add_argument("--guidance", type=float, default=1.0, metavar="S",
                    help="classifier-free guidance scale s with --labels: eps_u + s (eps_c - eps_u); 0 unconditional, "
                    "1 conditional (default), above 1 guided, e.g. 3")
    sa.add_argument("--out", default="samples.png",
                    help="image file to write, in the format its suffix names: .png, .jpg, ... (default samples.png)")
    sa.add_argument("--seed", type=int, default=0, help="seed of the sampler's generator (default 0)")
    sa.add_argument("--batch-size", type=_positive_int, default=None,
                    help="draw the samples in batches of this many (default: all N at once). Smaller batches bound "
                    "the memory and on a CPU can take less time per image; other batch sizes draw other images "
                    "from the same seed")
    sa.add_argument("--sampler", choices=SAMPLERS, default="ddpm",
                    help="ddpm: Algorithm 2, ancestral (respaced with --steps); ddim: DDIM (deterministic at --eta 0); "
                    "dpm_solver++: DPM-Solver++(2M), an ODE solver; dpm_solver++_sde: its stochastic variant "
                    "(default ddpm). For digits fast: --sampler dpm_solver++_sde --steps 20 (on the reference model, 1,000 "
                    "samples: FID 18.3 against 23.1 for the full 400-step chain, 16 s against 36 min on a 2-core CPU; "
                    "ddpm_tutor/records/samplers.json). Chapter 11 compares them")
    sa.add_argument("--steps", type=_positive_int, default=None,
                    help="network evaluations, 1..T, at evenly spaced steps starting from t = T (default: all T)")
    sa.add_argument("--eta", type=float, default=0.0,
                    help="DDIM's noise scale in [0, 1]: 0 deterministic, 1 the DDPM posterior (--sampler ddim only)")
    sa.add_argument("--variance", choices=["beta", "beta_tilde"], default=None,
                    help="sigma_t^2 of the reverse steps, --sampler ddpm only (default beta_tilde)")
    sa.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    sa.add_argument("--quality", action="store_true",
                    help="also report the classifier's confident fraction and class histogram")
    sa.add_argument("--quality-json", default=None, metavar="PATH",
                    help="also write the quality numbers (and how they were obtained) to this JSON file; implies --quality")
    sa.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    sa.set_defaults(func=_cmd_sample)

    ev = sub.add_parser(
        "evaluate",
        help="draw N samples and measure them: FID, KID, precision/recall (with real-data floors), memorisation",
        description="Draw N samples from a checkpoint and measure them against the MNIST test set in the shipped "
        "classifier's feature space (penultimate layer): FID and KID (torchmetrics), precision and recall (k = 3), "
        "each beside the same score of N real training digits (the real-data floor: FID depends on N); the "
        "nearest-training-digit distance (memorisation); the confident fraction and class histogram.",
    )
    ev.add_argument("--checkpoint", required=True,
                    help="a checkpoint.pt written by `train`, or 'pretrained' for the reference model")
    ev.add_argument("--n", type=_positive_int, default=1000, help="number of samples (default 1000); the floors use the same N")
    ev.add_argument("--seed", type=int, default=0, help="seed of the sampler's generator (default 0)")
    ev.add_argument("--json", default=None, metavar="PATH", help="also write the record to this JSON file (its folder must exist)")
    ev.add_argument("--batch-size", type=_positive_int, default=None, help="draw the samples this many at a time (default: all at once)")
    ev.add_argument("--variance", choices=["beta", "beta_tilde"], default=None, help="sigma_t^2 of the reverse steps (default: sample's)")
    ev.add_argument("--sampler", default=None, help="sampler name, passed to sample() (where sample offers samplers)")
    ev.add_argument("--steps", type=_positive_int, default=None, help="network evaluations of the sampler, passed to sample()")
    ev.add_argument("--eta", type=float, default=None, help="DDIM's eta, passed to sample()")
    ev.add_argument("--floor-draws", type=_at_least_two, default=5, help="draws of N real digits behind each floor (default 5)")
    ev.add_argument("--inception", action="store_true",
                    help="also compute an Inception-v3 FID (ImageNet features; needs torch-fidelity and downloads the "
                    "weights, e.g. on Colab). NOT comparable with the MNIST-feature FID")
    ev.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    ev.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    ev.set_defaults(func=_cmd_evaluate)

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
    args.argv = None if argv is None else list(argv[1:])  # the command's own arguments, for records
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
