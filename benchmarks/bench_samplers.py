"""Which sampler, how many steps? Time and quality of every sampler on the shipped reference model.

For the reference checkpoint (``dt.load_pretrained()``) it draws N samples (default 1000) with one
fixed seed, so every run starts from the same x_T, with

* each sampler of ``dt.SAMPLERS`` at 5, 10, 20, 50 and 100 network evaluations (NFE),
* the full chain: Algorithm 2 over all T steps (``sampler="ddpm"``, ``steps=None``),
* the ODE limit: DDIM with eta = 0 over all T steps (what the ODE samplers converge to),
* DDIM with eta = 0.5 (``--ddim-etas``) at the same NFE and at T steps, between the ODE and DDPM,

and records for each run the wall time of sampling, the MNIST classifier's confident fraction
and rarest digit (``ddpm_tutor.metrics``), and, where ``ddpm_tutor.evaluation`` is available,
FID, KID, precision and recall with their real-data floors at the same N. The record is written
(atomically, after every run, so an interrupted run keeps what it finished) as JSON with the
command that produced it. ``--resume`` keeps the runs an existing record holds and measures only
the missing ones (more NFE, say); each run names the ``session`` (machine, threads, date) whose
clock timed it.

Usage, from the repository root::

    python benchmarks/bench_samplers.py                               # N = 1000 on the CPU
    python benchmarks/bench_samplers.py --device cuda                 # the same on a GPU
    python benchmarks/bench_samplers.py --n 64 --nfe 5,10 --out /tmp/s.json   # a quick check
    python benchmarks/bench_samplers.py --samplers dpm_solver++_sde --nfe 20,50 --no-full-chain \
        --no-ode-limit --ddim-etas '' --out ddpm_tutor/records/samplers_cpu_timing.json      # CPU seconds of one sampler

Timings are wall-clock seconds on the machine named in the run's session; compare seconds only
within one session (a busy machine slows every run of it alike only roughly). The samples, and so
every quality number, depend only on the seed, not on the session.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

import ddpm_tutor as dt
from ddpm_tutor.metrics import sample_quality
from ddpm_tutor.files import atomic_write_text

try:  # FID and friends come from the evaluation module where it exists
    from ddpm_tutor import evaluation
except ImportError:  # pragma: no cover - depends on the package version
    evaluation = None


def _write_atomic(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def _runs(samplers: list[str], nfes: list[int], T: int, ode_limit: bool, ddim_etas: list[float],
          full_chain: bool = True, eta_nfes: list[int] | None = None) -> list[dict]:
    runs = [{"label": f"full chain (ddpm, {T} steps)", "sampler": "ddpm", "steps": None, "eta": 0.0}] * full_chain
    if ode_limit:
        runs.append({"label": f"ODE limit (ddim, eta 0, {T} steps)", "sampler": "ddim", "steps": T, "eta": 0.0})
    for name in samplers:
        for nfe in nfes:
            runs.append({"label": f"{name}, {nfe} NFE", "sampler": name, "steps": nfe, "eta": 0.0})
    for eta in ddim_etas:  # between the ODE (eta 0) and respaced DDPM (eta 1)
        for nfe in [*nfes, T] if eta_nfes is None else eta_nfes:
            runs.append({"label": f"ddim eta {eta:g}, {nfe} NFE", "sampler": "ddim", "steps": nfe, "eta": eta})
    return runs


def _measure(images: torch.Tensor, run: dict, seconds: float, nfe: int, args) -> dict:
    quality = sample_quality(images)
    out = {"confident_fraction": quality.confident_fraction, "min_class_fraction": quality.min_class_fraction,
           "class_counts": list(quality.counts)}
    if evaluation is not None and not args.no_fid:
        ev = evaluation.evaluate_images(images, nfe=nfe, sampling_seconds=seconds, floor_draws=args.floor_draws,
                                        sampler={"sampler": run["sampler"], "steps": run["steps"], "eta": run["eta"],
                                                 "seed": args.seed})
        d = ev.to_dict()
        out.update({k: d[k] for k in ("fid", "fid_floor", "kid", "kid_floor", "precision", "recall") if k in d})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="samples per run (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run's generator (default 0)")
    parser.add_argument("--nfe", default="5,10,20,50,100", help="network evaluations, comma-separated")
    parser.add_argument("--samplers", default=",".join(dt.SAMPLERS), help="comma-separated sampler names")
    parser.add_argument("--no-full-chain", action="store_true", help="skip Algorithm 2 over all T steps")
    parser.add_argument("--no-ode-limit", action="store_true", help="skip DDIM over all T steps")
    parser.add_argument("--ddim-etas", default="0.5",
                        help="also DDIM with these eta in (0, 1], at every --nfe and at T steps (comma-separated; '' for none)")
    parser.add_argument("--eta-nfe", default=None,
                        help="the NFE of the --ddim-etas runs (comma-separated; default: every --nfe and T)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs an existing --out record already holds (same model, n, seed and T) and "
                             "measure only the missing ones; the record lists each session")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--batch-size", type=int, default=None, help="draw the N samples this many at a time")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--no-fid", action="store_true", help="skip FID/KID even where ddpm_tutor.evaluation exists")
    parser.add_argument("--floor-draws", type=int, default=5, help="draws of N real digits behind each floor")
    parser.add_argument("--out", default="ddpm_tutor/records/samplers.json", help="JSON record to write")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    samplers = [s for s in args.samplers.split(",") if s]
    for name in samplers:
        if name not in dt.SAMPLERS:
            parser.error(f"--samplers: unknown sampler {name!r}; choose from {', '.join(dt.SAMPLERS)}")
    nfes = [int(v) for v in args.nfe.split(",") if v]

    device = torch.device(args.device)
    model, schedule = dt.load_pretrained(device=device)
    shape = (args.n, model.config.in_channels, model.config.image_size, model.config.image_size)
    ddim_etas = [float(v) for v in args.ddim_etas.split(",") if v]
    eta_nfes = None if args.eta_nfe is None else [int(v) for v in args.eta_nfe.split(",") if v]
    runs = _runs(samplers, nfes, schedule.T, not args.no_ode_limit, ddim_etas, not args.no_full_chain, eta_nfes)
    words = [w for w in (sys.argv[1:] if argv is None else argv) if w != "--resume"]
    record = {
        "command": "python benchmarks/bench_samplers.py " + shlex.join(words),
        "model": "the shipped reference checkpoint (dt.load_pretrained)",
        "T": schedule.T,
        "n": args.n,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "time_steps": "trailing (ddpm_tutor.samplers.trailing_timesteps)",
        "device": str(device) if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})",
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "fid": "ddpm_tutor.evaluation (MNIST classifier features)" if evaluation is not None and not args.no_fid else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runs": [],
    }
    out = Path(args.out)
    session = {key: record[key] for key in ("started", "device", "threads", "platform", "torch")}
    done = {}
    if args.resume and out.is_file():
        old = json.loads(out.read_text())
        same = {key: old.get(key) for key in ("model", "T", "n", "seed")} == {key: record[key] for key in ("model", "T", "n", "seed")}
        if not same:
            parser.error(f"--resume: {out} holds another measurement (model, T, n or seed differ); "
                         "write to another --out or drop --resume")
        sessions = old.get("sessions") or [{key: old.get(key) for key in session}]
        done = {r["label"]: {"session": 0, **r} for r in old["runs"]}
        record["sessions"] = [*sessions, session]
        record["started"] = old.get("started", record["started"])
    else:
        record["sessions"] = [session]
    plan = [r["label"] for r in runs]
    record["runs"] = [done[label] for label in plan if label in done]
    runs = [r for r in runs if r["label"] not in done]
    print(f"{len(record['runs'])} runs kept from {out}, {len(runs)} to measure" if done else f"{len(runs)} runs to measure")
    # one small warm-up so that the first timed run does not pay for library initialisation
    dt.sample(model, schedule, (2, *shape[1:]), sampler="ddim", steps=2, progress=False, device=device)
    for run in runs:
        generator = torch.Generator(device=device).manual_seed(args.seed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        images = dt.sample(model, schedule, shape, sampler=run["sampler"], steps=run["steps"], eta=run["eta"],
                           generator=generator, batch_size=args.batch_size, device=device, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        nfe = run["steps"] or schedule.T
        result = {**run, "nfe": nfe, "seconds": round(seconds, 2), **_measure(images.cpu(), run, seconds, nfe, args),
                  "session": len(record["sessions"]) - 1}
        record["runs"].append(result)
        record["runs"].sort(key=lambda r: plan.index(r["label"]) if r["label"] in plan else len(plan))
        record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        _write_atomic(out, record)
        fid = f"  FID {result['fid']:.3f}" if "fid" in result else ""
        print(f"{run['label']:<36} {seconds:8.1f} s  confident {result['confident_fraction']:.3f}{fid}", flush=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
