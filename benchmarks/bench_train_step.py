"""Training steps per second of ``dt.train`` (on the CPU by default): this checkout against another one, side by side.

Each measurement runs in a fresh process that imports ``ddpm_tutor`` from the folder given (so two
versions of the package can be compared), trains the ``cpu`` profile's network at batch 128 for a few
warm-up steps, then times ``--steps`` more (random images in [-1, 1], no checkpoints, no samples).
Versions take turns within each round, and the ratio is taken within a round, so a neighbour that
steals the CPU for a while slows both alike; the summary gives the median over rounds.

Usage (from the repository root)::

    python benchmarks/bench_train_step.py                          # this checkout only
    python benchmarks/bench_train_step.py --against /path/to/old   # the other checkout's ddpm_tutor vs this one
    python benchmarks/bench_train_step.py --against /path/to/old --rounds 5 --steps 50 --threads 2
    python benchmarks/bench_train_step.py --against /path/to/old --device cuda --steps 500 --warmup 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import torch
from dataclasses import replace
import ddpm_tutor as dt

steps, warmup, threads, batch = (int(a) for a in sys.argv[1:5])
device = sys.argv[5]
torch.set_num_threads(threads)
base = dt.profile_config("cpu")
config = replace(base, batch_size=batch, sample_every=0, log_every=50, checkpoint_every=10_000, compile=False)
data = torch.rand(1024, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
dt.train(replace(config, steps=warmup), data=data, progress=False, device=device)
wall, cpu = time.perf_counter(), time.process_time()
dt.train(replace(config, steps=steps), data=data, progress=False, device=device)  # ends with its last loss read
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"steps_per_s": steps / wall, "cpu_s_per_step": cpu / steps, "torch": torch.__version__}))
"""


def measure(package_root: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.steps), str(args.warmup), str(args.threads), str(args.batch), args.device],
        env=env, check=True, capture_output=True, text=True, cwd=package_root,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", type=Path, default=None, help="another checkout's root, measured first in each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="torch device of the runs, e.g. cuda (there the mixed precision "
                        "is the profile's: bf16 autocast)")
    args = parser.parse_args(argv)

    versions = ([("other", args.against.resolve())] if args.against else []) + [("this", ROOT)]
    results: dict[str, list[dict]] = {name: [] for name, _ in versions}
    for r in range(args.rounds):
        line = []
        for name, root in versions:
            m = measure(root, args)
            results[name].append(m)
            line.append(f"{name} {m['steps_per_s']:.2f} steps/s ({m['cpu_s_per_step']:.3f} CPU s/step)")
        if args.against:
            line.append(f"ratio this/other {results['this'][-1]['steps_per_s'] / results['other'][-1]['steps_per_s']:.3f}")
        print(f"round {r + 1}: " + ", ".join(line), flush=True)
    for name, _ in versions:
        print(f"{name}: median {statistics.median(m['steps_per_s'] for m in results[name]):.2f} steps/s, "
              f"median {statistics.median(m['cpu_s_per_step'] for m in results[name]):.3f} CPU s/step")
    if args.against:
        ratios = [t["steps_per_s"] / o["steps_per_s"] for t, o in zip(results["this"], results["other"])]
        cpu = [o["cpu_s_per_step"] / t["cpu_s_per_step"] for t, o in zip(results["this"], results["other"])]
        print(f"this/other steps/s: median {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]; "
              f"CPU time per step other/this: median {statistics.median(cpu):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
