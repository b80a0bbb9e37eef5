"""Training steps per second of ``dt.train`` in 1 process against N processes (``torchrun``), same global batch.

Each measurement runs in fresh processes: one plain process, or ``torchrun --standalone --nproc_per_node=N``
(DistributedDataParallel: gloo on the CPU, NCCL on GPUs). They train the chosen profile's network on random
images in [-1, 1] (no checkpoints, no samples) at the same global batch, and rank 0 times the steps after
``--warmup`` of them. Each layout is ``PROCESSESxTHREADS``: on 2 cores, ``1x2`` (one process using both
cores as threads), ``1x1`` (one process, one thread) and ``2x1`` (two processes of one thread each: DDP).
The layouts take turns within each round and every ratio is taken within a round against the first layout,
so a neighbour who steals the CPU for a while slows them alike; the summary gives the median over rounds
and the range. On GPUs give one thread per process: ``1x1,2x1`` is one GPU against two. A layout ending in
``c`` trains with a compiled step (``TrainConfig.compile``: ``torch.compile`` of the DDP-wrapped model), so
``1x1,1x1c`` compares eager and compiled steps in the same rounds (``--compile`` compiles every layout).

Usage (from the repository root)::

    python benchmarks/bench_ddp.py                                    # 1x2, 1x1 and 2x1 on the CPU
    python benchmarks/bench_ddp.py --rounds 5 --steps 40 --note "quiet machine"
    python benchmarks/bench_ddp.py --device cuda --layouts 1x1,2x1,4x1 --steps 300 --warmup 30 --batch 512 --profile gpu
    python benchmarks/bench_ddp.py --device cuda --layouts 1x1,1x1c,2x1,2x1c --steps 300 --warmup 60   # compiled too

It writes the JSON record ``ddpm_tutor/records/ddp_scaling.json`` (``--out``; ``--out ''`` writes none) with the
command, the machine's load average before and after, every round and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(steps: int, warmup: int, batch: int, profile: str, device: str, compile_step: bool) -> None:
    """One process of a measurement (plain or under torchrun): train, and on rank 0 print steps/s after the warm-up."""
    from dataclasses import replace

    import torch

    import ddpm_tutor as dt
    from ddpm_tutor import training as tr

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    config = replace(dt.profile_config(profile), steps=steps, batch_size=batch, sample_every=0, log_every=steps,
                     checkpoint_every=10 * steps, compile=compile_step)
    data = torch.rand(1024, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    stamps: list[float] = []
    step = tr._optimisation_step

    def timed_step(run, step_model, *args, **kwargs):  # the time after each step's optimiser update
        loss = step(run, step_model, *args, **kwargs)
        if len(stamps) in (warmup - 1, steps - 1) and loss.device.type == "cuda":
            torch.cuda.synchronize(loss.device)
        stamps.append(time.perf_counter())
        return loss

    tr._optimisation_step = timed_step
    start = time.perf_counter()
    dt.train(config, data=data, progress=False, device=device)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({
            "steps_per_s": (steps - warmup) / (stamps[-1] - stamps[warmup - 1]),
            "first_steps_s": stamps[warmup - 1] - start,  # set-up, the warm-up (and compilation)
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }))


def measure(layout: str, args: argparse.Namespace) -> dict:
    nproc, threads = (int(v) for v in layout.removesuffix("c").split("x"))
    compile_step = args.compile or layout.endswith("c")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])), OMP_NUM_THREADS=str(threads))
    me = [str(Path(__file__).resolve()), "--worker", str(args.steps), str(args.warmup), str(args.batch), args.profile,
          args.device, "1" if compile_step else "0"]
    launch = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  f"--nproc_per_node={nproc}"]
    done = subprocess.run(launch + me, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_ddp: the {layout} measurement failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        steps, warmup, batch, profile, device, compile_step = argv[1:7]
        worker(int(steps), int(warmup), int(batch), profile, device, compile_step == "1")
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", default="1x2,1x1,2x1",
                        help="PROCESSESxTHREADS to compare, the first is the reference (default 1x2,1x1,2x1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each measures every layout once (default 3)")
    parser.add_argument("--steps", type=int, default=30, help="steps per measurement, warm-up included (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="steps not timed (default 5)")
    parser.add_argument("--batch", type=int, default=128, help="the global batch, split among the processes (default 128)")
    parser.add_argument("--profile", default="cpu", help="whose network and settings to train (default cpu)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: one GPU per process (default cpu)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training step (TrainConfig.compile)")
    parser.add_argument("--note", default="", help="a note kept in the record, e.g. what else ran on the machine")
    parser.add_argument("--out", default=str(ROOT / "ddpm_tutor" / "records" / "ddp_scaling.json"),
                        help="the JSON record to write ('' for none)")
    args = parser.parse_args(argv)
    layouts = args.layouts.split(",")
    parts = [v.removesuffix("c").split("x") for v in layouts]
    if not all(len(p) == 2 and all(n.isdigit() and int(n) > 0 for n in p) for p in parts):
        raise SystemExit(f"bench_ddp: --layouts must be PROCESSESxTHREADS items such as 1x2,2x1,2x1c, got {args.layouts!r}")
    procs = [int(p[0]) for p in parts]
    if not 1 <= args.warmup < args.steps:
        raise SystemExit(f"bench_ddp: --warmup must lie in 1..{args.steps - 1} (--steps {args.steps}), got {args.warmup}")
    bad = [n for n in procs if n < 1 or args.batch % n]
    if bad:
        raise SystemExit(f"bench_ddp: --batch {args.batch} must divide among the processes of every layout; {bad} processes do not")

    load_before = os.getloadavg()
    rounds = []
    for r in range(args.rounds):
        order = layouts if r % 2 == 0 else layouts[::-1]  # alternate who goes first
        result = {v: measure(v, args) for v in order}
        rounds.append({v: result[v] for v in layouts})
        line = "  ".join(f"{v}: {result[v]['steps_per_s']:.3f} steps/s" for v in layouts)
        print(f"round {r + 1}/{args.rounds}: {line}", flush=True)
    load_after = os.getloadavg()

    ref = layouts[0]
    summary = {}
    print(f"\nglobal batch {args.batch}, {args.profile} profile's network, {args.device}, {os.cpu_count()} cores")
    for v in layouts:
        rates = [rd[v]["steps_per_s"] for rd in rounds]
        ratios = [rd[v]["steps_per_s"] / rd[ref]["steps_per_s"] for rd in rounds]
        summary[v] = {"processes": rounds[0][v]["world_size"], "threads_per_process": rounds[0][v]["threads"],
                      "compiled": args.compile or v.endswith("c"), "steps_per_s": statistics.median(rates),
                      "ratio": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
                      "first_steps_s": statistics.median(rd[v]["first_steps_s"] for rd in rounds),
                      # against every other layout, each ratio within a round, then the median over rounds
                      "ratio_to": {w: statistics.median(rd[v]["steps_per_s"] / rd[w]["steps_per_s"] for rd in rounds)
                                   for w in layouts if w != v}}
        print(f"  {summary[v]['processes']} process(es) x {summary[v]['threads_per_process']} thread(s)"
              + (", compiled" if summary[v]["compiled"] else "") + f": median {summary[v]['steps_per_s']:.3f} steps/s, "
              f"x{summary[v]['ratio']:.2f} [{min(ratios):.2f}-{max(ratios):.2f}] against {ref}; set-up and "
              f"{args.warmup} warm-up steps {summary[v]['first_steps_s']:.1f} s")
    for v in layouts[1:]:
        others = ", ".join(f"x{r:.2f} against {w}" for w, r in summary[v]["ratio_to"].items() if w != ref)
        if others:
            print(f"  {v}: {others}")
    print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    if args.out:
        record = {
            "what": "training steps per second of dt.train at the same global batch, 1 process against N (torchrun, DDP)",
            "command": shlex.join(["python", "benchmarks/bench_ddp.py", *argv]),
            "device": args.device, "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "profile": args.profile, "global_batch": args.batch, "steps": args.steps, "warmup": args.warmup,
            "compile": args.compile, "torch_version": rounds[0][ref]["torch"], "note": args.note,
            "load_average_before": list(load_before), "load_average_after": list(load_after),
            "layouts": layouts, "summary": summary, "rounds": rounds,
            "date": time.strftime("%Y-%m-%d"),
        }
        sys.path.insert(0, str(ROOT))
        from ddpm_tutor.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
