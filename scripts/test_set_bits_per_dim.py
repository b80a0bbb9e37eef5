"""The reference model's likelihood bound on MNIST test digits, in bits per dimension.

    DDPM_TUTOR_DATA=<folder with the MNIST .gz files> python scripts/test_set_bits_per_dim.py --n 1000

Evaluates the variational bound L = L_T + sum_{t=2}^T L_{t-1} + L_0 (Ho et al. 2020, eq. 5; the
discretised Gaussian decoder of their sec. 3.3) with :func:`ddpm_tutor.vlb_bits_per_dim` on ``--n``
test digits drawn at random (seeded; the test set's two halves come from different writers, so a
prefix would not be a fair sample), one draw of x_t per step and digit, all T steps. Writes
``ddpm_tutor/records/bits_per_dim.json`` atomically: the mean bound with its standard error over digits, the
split into L_0, sum L_{t-1} and L_T (each with its standard error), the mean L_{t-1} of every step
(for a plot), and how it was obtained.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import ddpm_tutor as dt
from ddpm_tutor.data import load_mnist, to_model_range

OUT = Path(__file__).resolve().parent.parent / "ddpm_tutor" / "records" / "bits_per_dim.json"


def mean_and_se(x: torch.Tensor) -> dict[str, float]:
    """Mean over digits and its standard error s / sqrt(n)."""
    return {"mean": float(x.mean()), "se": float(x.std() / math.sqrt(x.numel()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="pretrained", help="a checkpoint.pt, or 'pretrained' (the reference)")
    parser.add_argument("--n", type=int, default=1000, help="test digits (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the digit subset and the x_t draws")
    parser.add_argument("--variance", choices=["beta", "beta_tilde"], default="beta_tilde", help="sigma_t^2 of p_theta")
    parser.add_argument("--batch-size", type=int, default=400, help="(digit, step) pairs per network call")
    parser.add_argument("--chunk", type=int, default=25, help="digits per progress step")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint == "pretrained":
        model, schedule = dt.load_pretrained(args.device)
    else:
        model, schedule, _ = dt.load_model(args.checkpoint, which="ema", device=args.device)
    images, _ = load_mnist("test")
    idx = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(args.seed))[: args.n]
    x0 = to_model_range(images[idx]).to(args.device)  # (n, 1, 28, 28) on the 256-level grid
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    start = time.perf_counter()
    parts = []
    for chunk in tqdm(x0.split(args.chunk), desc=f"bound on {args.n} test digits"):
        parts.append(dt.vlb_bits_per_dim(model, schedule, chunk, generator=generator, variance=args.variance,
                                         batch_size=args.batch_size, progress=False))
    seconds = time.perf_counter() - start
    total = torch.cat([p.total for p in parts]).cpu()  # (n,)
    terms = torch.cat([p.terms for p in parts]).cpu()  # (n, T); column 0 is L_0
    prior = torch.cat([p.prior for p in parts]).cpu()
    record = {
        "bits_per_dim": mean_and_se(total),
        "L_0": mean_and_se(terms[:, 0]),
        "sum_L_t_minus_1": mean_and_se(terms[:, 1:].sum(dim=1)),
        "L_T": mean_and_se(prior),
        "L_t_minus_1_by_step": [float(v) for v in terms.mean(dim=0)],  # code step t = 0..T-1 (0: L_0)
        "n": args.n,
        "T": schedule.T,
        "variance": args.variance,
        "checkpoint": args.checkpoint,
        "seed": args.seed,
        "digits": "MNIST test digits, a seeded random subset (torch.randperm(10000, seed)[:n])",
        "units": "bits per dimension (784 dimensions); each term summed over pixels, divided by 784 ln 2",
        "seconds": round(seconds, 1),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "command": f"python scripts/test_set_bits_per_dim.py --n {args.n} --seed {args.seed} --variance {args.variance}"
        + ("" if args.checkpoint == "pretrained" else f" --checkpoint {args.checkpoint}")
        + ("" if args.device == "cpu" else f" --device {args.device}"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=args.out.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.out)  # atomic
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    b = record["bits_per_dim"]
    print(f"{b['mean']:.4f} +- {b['se']:.4f} bits/dim on {args.n} test digits ({seconds:.0f} s): "
          f"L_0 {record['L_0']['mean']:.4f}, sum L_t-1 {record['sum_L_t_minus_1']['mean']:.4f}, L_T {record['L_T']['mean']:.2e}")


if __name__ == "__main__":
    main()
