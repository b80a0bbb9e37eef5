"""Measure classifier-free guidance: requested-digit accuracy, confidence and diversity against the scale s.

    python scripts/guidance_sweep.py --checkpoint pretrained:mnist-conditional --out ddpm_tutor/records/guidance.json
    python scripts/guidance_sweep.py --checkpoint runs/cond/checkpoint.pt --device cuda --out ddpm_tutor/records/guidance.json

For each s in --scales (default 0, 1, 1.5, 2, 3, 5, 8) it draws --per-class images of every digit (default
100: 1,000 images) from the same noise (--seed), and records, with the shipped MNIST classifier
(``ddpm_tutor.metrics``): the fraction classified as the requested digit, the confident fraction (max softmax
> 0.9), the diversity within a digit (mean pairwise distance of the classifier's penultimate features) and,
where ``ddpm_tutor.evaluation`` exists, FID against the test set in those features. The real test digits'
diversity (the same number of each digit) is recorded as the yardstick. Chapter 12 plots the JSON.
--sampler and --steps are passed to ``dt.sample`` where it has them (the fast samplers).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

import ddpm_tutor as dt
from ddpm_tutor.files import atomic_write_text
from ddpm_tutor.guidance import SWEEP_SCALES, class_diversity, classifier_outputs, sweep


def _scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers such as 0,1,3, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"guidance scales must be >= 0, got {text!r}")
    return values


def _write_json(path: Path, record: dict) -> None:
    """Atomic (ddpm_tutor.files): a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def real_diversity(per_class: int, data_root: str | None = None) -> float | None:
    """:func:`class_diversity` of the first ``per_class`` test digits of each class (None without the data)."""
    from ddpm_tutor import data

    try:
        images, labels = data.load_mnist("test", root=data_root, download=False)
    except (ValueError, OSError):
        return None
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(10)])
    _, feats = classifier_outputs(data.to_model_range(images[keep]))
    return class_diversity(feats, labels[keep])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="pretrained:mnist-conditional",
                        help="a conditional checkpoint.pt, or 'pretrained:mnist-conditional' (the default)")
    parser.add_argument("--scales", type=_scales, default=SWEEP_SCALES, help="comma-separated guidance scales")
    parser.add_argument("--per-class", type=int, default=100, help="images per digit and scale (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise, the same for every scale")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=None, help="draw the images this many at a time")
    parser.add_argument("--sampler", default=None, help="passed to dt.sample, where it supports samplers")
    parser.add_argument("--steps", type=int, default=None, help="passed to dt.sample, where it supports samplers")
    parser.add_argument("--data", default=None, help="MNIST folder, for the real digits' diversity")
    parser.add_argument("--out", default="ddpm_tutor/records/guidance.json", help="the JSON to write")
    args = parser.parse_args(argv)
    if args.per_class < 1:
        parser.error(f"--per-class must be a positive int, got {args.per_class}")

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.checkpoint.startswith("pretrained:"):
        model, schedule = dt.load_pretrained(args.checkpoint.partition(":")[2], device=device)
    else:
        model, schedule, _ = dt.load_model(args.checkpoint, device=device)
    if model.config.num_classes is None:
        parser.error(f"{args.checkpoint} is unconditional; guidance needs a model trained with `train --conditional`")
    kwargs = {"device": device, "batch_size": args.batch_size}
    for name in ("sampler", "steps"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)

    start = time.perf_counter()
    records = sweep(model, schedule, scales=args.scales, per_class=args.per_class, seed=args.seed, **kwargs)
    seconds = time.perf_counter() - start
    for r in records:
        fid = "" if r["fid"] is None else f", FID {r['fid']:.2f}"
        print(f"s = {r['scale']:>4g}: requested digit {r['requested_fraction']:.1%}, confident "
              f"{r['confident_fraction']:.1%}, diversity {r['diversity']:.2f}{fid}")
    result = {
        "command": "python scripts/guidance_sweep.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "checkpoint": args.checkpoint,
        "train_config": {k: v for k, v in dt.checkpoints.load_checkpoint(
            dt.checkpoints.pretrained_path(args.checkpoint.partition(":")[2]) if args.checkpoint.startswith("pretrained:")
            else args.checkpoint)["train_config"].items() if k in ("profile", "steps", "batch_size", "label_dropout")},
        "seed": args.seed,
        "per_class": args.per_class,
        "sampler": kwargs.get("sampler", "ddpm"),
        "steps": kwargs.get("steps", schedule.T),
        "device": str(device),
        "torch_version": torch.__version__,
        "seconds": round(seconds, 1),
        "real_diversity": real_diversity(args.per_class, args.data),
        "scales": records,
    }
    _write_json(Path(args.out), result)
    print(f"wrote {args.out} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
