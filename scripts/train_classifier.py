"""Train the small MNIST (or Fashion-MNIST) classifier that ddpm_tutor.metrics uses to judge samples.

    DDPM_TUTOR_DATA=<folder with the MNIST .gz files> python scripts/train_classifier.py
    DDPM_TUTOR_DATA=<data folder> python scripts/train_classifier.py --dataset fashion-mnist --epochs 2

Trains ``MNISTClassifier`` on the MNIST train split with random shifts of up to
+-``--shift`` pixels (so slightly off-centre generated digits are still recognised),
reports test accuracy, then writes, each atomically (temp file + ``os.replace``):

* ``ddpm_tutor/weights/mnist_classifier.pt`` (``fashion_mnist_classifier.pt``): the ``state_dict`` only;
* the ``.json`` beside it: its sha256, the architecture, test
  accuracy, reference confident fractions, the command, torch version and seed.

Seeded: the same command on the same torch version and thread count gives the same
weights.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddpm_tutor.data import to_model_range
from ddpm_tutor.datasets import load_dataset
from ddpm_tutor.files import atomic_write, atomic_write_text, sha256_file
from ddpm_tutor.metrics import CLASSIFIER_DATASETS, MNISTClassifier, classifier_path, load_classifier, sample_quality


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image of ``x`` (B, 1, H, W) by its own integer offset in
    ``[-max_shift, max_shift]`` along both axes, filling with background (-1)."""
    if max_shift == 0:
        return x
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)  # (B, 1, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, B), generator=generator)
    rows = dy[:, None] + torch.arange(H)  # (B, H)
    cols = dx[:, None] + torch.arange(W)  # (B, W)
    out = padded[torch.arange(B)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]  # (B, H, W)
    return out.unsqueeze(1)


def outliers(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` non-digit images in model range, (n, 1, 28, 28): half white Gaussian noise,
    half smooth noise (Gaussian noise on a 7x7 or 14x14 grid, upsampled), each with a
    random brightness offset and contrast, clipped to [-1, 1] as sample_quality does."""
    half = n // 2
    white = torch.randn(half, 1, 28, 28, generator=generator)
    k = 7 if int(torch.randint(0, 2, (), generator=generator)) == 0 else 14
    smooth = F.interpolate(torch.randn(n - half, 1, k, k, generator=generator), size=28, mode="bilinear")
    smooth = smooth / smooth.std(dim=(1, 2, 3), keepdim=True)
    x = torch.cat([white, smooth])
    scale = 0.2 + 1.3 * torch.rand(n, 1, 1, 1, generator=generator)
    offset = -1.0 + 1.5 * torch.rand(n, 1, 1, 1, generator=generator)
    return (offset + scale * x).clamp(-1.0, 1.0)


@torch.no_grad()
def accuracy(model: MNISTClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(1000), y.split(1000)))
    return correct / y.numel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=CLASSIFIER_DATASETS, default="mnist")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    parser.add_argument("--shift", type=int, default=2, help="max random shift in pixels")
    parser.add_argument("--outliers", type=int, default=16, help="noise images per step (outlier exposure)")
    parser.add_argument("--outlier-weight", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=None,
                        help="weights file (.pt); the .json goes next to it (default: the shipped file of --dataset)")
    args = parser.parse_args(argv)
    args.out = classifier_path(args.dataset) if args.out is None else args.out

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    x_train, y_train = load_dataset(args.dataset, "train")  # (N, 1, 28, 28) uint8
    x_test, y_test = load_dataset(args.dataset, "test")
    x_train, x_test = to_model_range(x_train), to_model_range(x_test)  # (N, 1, 28, 28) in [-1, 1]

    model = MNISTClassifier()
    n_params = sum(p.numel() for p in model.parameters())
    steps_per_epoch = x_train.shape[0] // args.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    print(f"MNISTClassifier on {args.dataset}: {n_params} parameters; {args.epochs} epochs x {steps_per_epoch} steps")

    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(x_train.shape[0], generator=gen)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            x = random_shift(x_train[idx], args.shift, gen)
            # Outlier exposure (Hendrycks et al., 2019): on noise images, cross-entropy to the
            # uniform distribution, so that non-digits get low confidence instead of the
            # near-certain predictions a plain classifier gives pure noise.
            x_out = outliers(args.outliers, gen)
            logits = model(torch.cat([x, x_out]))  # (B + n_out, 10)
            loss = F.cross_entropy(logits[: x.shape[0]], y_train[idx])
            loss = loss - args.outlier_weight * F.log_softmax(logits[x.shape[0]:], dim=1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = accuracy(model, x_test, y_test)
        print(f"epoch {epoch + 1}: train loss {total / steps_per_epoch:.4f}, test accuracy {acc:.4f}, "
              f"{time.perf_counter() - start:.0f} s")
    train_seconds = time.perf_counter() - start
    train_cpu_seconds = time.process_time() - cpu_start  # summed over threads; wall time depends on load
    test_acc = accuracy(model, x_test, y_test)

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    sha = sha256_file(out)

    cmd = ["python", "scripts/train_classifier.py"] + (["--dataset", args.dataset] if args.dataset != "mnist" else [])
    for name in ("epochs", "batch_size", "lr", "shift", "outliers", "outlier_weight", "seed", "threads"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    meta = {
        "sha256": sha,
        "architecture": model.config,
        "parameters": n_params,
        "test_accuracy": round(test_acc, 6),
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        **({"dataset": args.dataset} if args.dataset != "mnist" else {}),
        "command": ("DDPM_TUTOR_DATA=<folder with the MNIST .gz files> " if args.dataset == "mnist" else
                    f"DDPM_TUTOR_DATA=<folder with a {args.dataset}/ subfolder> ") + shlex.join(cmd),
        "torch_version": torch.__version__,
        "seed": args.seed,
        "threads": args.threads,
        "augmentation": f"random shift of up to +-{args.shift} px",
        "outlier_exposure": f"{args.outliers} noise images per step, uniform-target weight {args.outlier_weight}",
    }
    meta_path = out.with_suffix(".json")
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")

    # Reference values for the book, measured with the file just written (sha checked).
    model = load_classifier(path=out, meta_path=meta_path)
    real = sample_quality(x_test, model)
    eval_gen = torch.Generator().manual_seed(args.seed + 1)
    noise = sample_quality(torch.randn(1000, 1, 28, 28, generator=eval_gen), model)
    # Not seen in training: uniform noise, and test digits buried in noise the way an
    # unfinished reverse process leaves them, xt = sqrt(a) x0 + sqrt(1 - a) eps (Ho et al. eq. 4).
    uniform = sample_quality(2 * torch.rand(1000, 1, 28, 28, generator=eval_gen) - 1, model)
    prefix = args.dataset.replace("-", "_")
    meta["reference"] = {
        "threshold": real.threshold,
        f"{prefix}_test_confident_fraction": round(real.confident_fraction, 4),
        f"{prefix}_test_min_class_fraction": round(real.min_class_fraction, 4),
        "gaussian_noise_confident_fraction": round(noise.confident_fraction, 4),
        "uniform_noise_confident_fraction": round(uniform.confident_fraction, 4),
    }
    for a in (0.99, 0.9, 0.5):
        eps = torch.randn(1000, 1, 28, 28, generator=eval_gen)
        xt = a**0.5 * x_test[:1000] + (1 - a) ** 0.5 * eps
        q = sample_quality(xt, model)
        meta["reference"][f"noised_test_alpha_bar_{a:g}_confident_fraction"] = round(q.confident_fraction, 4)
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))
    print(f"wrote {out} ({out.stat().st_size} bytes) and {meta_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
