"""What does stopping at the first NaN cost? Sampling with and without the per-step finiteness check.

``dt.sample``'s samplers check that x_t holds no NaN or inf (``samplers.FiniteCheck``), so that a
broken model stops with an error naming the step instead of writing a black image: on a CPU after
every reverse step (one pass over the batch), on a GPU every 25 steps and after the last (each check
makes the CPU wait for the GPU, a host sync). This script measures what the check costs, in one run:
rounds alternate "checked" (the package as it is) and "unchecked" (the check replaced by a no-op),
and the table shows the median seconds per reverse step and their ratio.

Usage::

    python benchmarks/bench_finite_check.py                       # CPU, the cpu profile's network
    python benchmarks/bench_finite_check.py --device cuda --n 512 # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import replace
from unittest import mock

import torch

import ddpm_tutor as dt
from ddpm_tutor import training
from ddpm_tutor.samplers import FiniteCheck


def seconds_per_step(model, schedule, n: int, device: str, checked: bool) -> float:
    shape = (n, 1, 28, 28)
    g = torch.Generator(device=device).manual_seed(0)
    no_check = mock.patch.object(FiniteCheck, "__call__", lambda self, xt, step, last: None)
    patch = no_check if not checked else contextlib.nullcontext()
    with patch:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        dt.sample(model, schedule, shape, generator=g, progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / schedule.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=16, help="images per batch")
    parser.add_argument("--T", type=int, default=50, help="reverse steps per sampling run")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    config = replace(training.PROFILES["cpu"].unet, T=args.T)
    model = dt.UNet(config).to(args.device).eval()
    schedule = dt.linear_schedule(args.T, beta_1=1e-4 * 1000 / args.T, beta_T=min(0.02 * 1000 / args.T, 0.999))
    seconds_per_step(model, schedule, args.n, args.device, True)  # warm-up
    times = {True: [], False: []}
    for _ in range(args.rounds):
        for checked in (True, False):
            times[checked].append(seconds_per_step(model, schedule, args.n, args.device, checked))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"device {args.device}, batch {args.n}, T {args.T}, {args.rounds} rounds (medians)")
    print(f"  checked   {on * 1e3:8.3f} ms per step")
    print(f"  unchecked {off * 1e3:8.3f} ms per step")
    print(f"  ratio checked / unchecked: {on / off:.3f}")


if __name__ == "__main__":
    main()
