"""How fast is ddpm_tutor's UNet on a small CPU, next to the model most readers meet first?

Compares, in one run and at the same batch size on 28x28 single-channel inputs:

* diffusers' ``UNet2DModel`` in the configuration of Hugging Face's diffusion
  course for MNIST (about 1.7 M parameters; 28 = 4 * 7, so it needs no padding:
  the script checks that its output is 28x28), run as the course runs it;
* the same with ``channels_last`` memory format (to show how much of the gap
  that alone closes);
* ``ddpm_tutor.unet.UNet`` with the default ``UNetConfig``: plain (contiguous),
  with ``channels_last``, and with ``channels_last`` plus ``torch.compile``.

For each variant it times

* a training step: forward, MSE loss against the true noise, backward, AdamW step;
* a sampling step: one forward pass under ``torch.inference_mode``;

and prints images per second and the ratio to diffusers. Repeats are
interleaved (every variant once per round) and the ratios are taken within a
round, so a neighbour stealing the CPU for a while slows every variant of that
round alike; the table shows medians over rounds.

It then times one forward pass at batch 1000 under ``inference_mode`` (the unit
cost of sampling 1000 images: Algorithm 2 of Ho et al. 2020 runs T = 1000 of them).

Usage::

    python benchmarks/bench_unet.py                 # full run, with torch.compile
    python benchmarks/bench_unet.py --quick         # fewer repeats, a smoke test
    python benchmarks/bench_unet.py --no-compile    # eager only
    python benchmarks/bench_unet.py --config '{"channels": [32, 64, 128]}'  # try another UNetConfig
    python benchmarks/bench_unet.py --threads 1 --clock cpu   # robust to a busy machine

Needs ``diffusers`` (the ``bench`` extra: ``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from typing import Callable

import torch
import torch._inductor.config as inductor_config
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ddpm_tutor.unet import UNet, UNetConfig

IMAGE_SIZE = 28
T = 1000


class DiffusersEps(nn.Module):
    """diffusers' UNet2DModel as the MNIST course builds it, returning a plain tensor like our UNet."""

    def __init__(self) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        self.net = UNet2DModel(
            sample_size=28,
            in_channels=1,
            out_channels=1,
            layers_per_block=2,
            block_out_channels=(32, 64, 64),
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        )

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(xt, t).sample


class Variant:
    """One model set up one way, with its own optimizer and its own inputs."""

    def __init__(self, name: str, model: nn.Module, channels_last: bool, compile_: bool, batch: int, seed: int):
        self.name = name
        self.params = sum(p.numel() for p in model.parameters())
        self.mmac = mmac_per_image(model)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        self.model = torch.compile(model, dynamic=False) if compile_ else model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(seed)
        self.xt = torch.randn(batch, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g).contiguous(memory_format=fmt)
        self.eps = torch.randn(batch, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g).contiguous(memory_format=fmt)
        self.t = torch.randint(0, T, (batch,), generator=g)
        self.train_s: list[float] = []
        self.sample_s: list[float] = []
        self.first_train_s = self.first_sample_s = float("nan")

    def train_step(self) -> None:
        self.model.train()
        loss = F.mse_loss(self.model(self.xt, self.t), self.eps)  # Ho et al. 2020, eq. 14
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def sample_step(self) -> None:
        self.model.eval()
        with torch.inference_mode():
            self.model(self.xt, self.t)


def mmac_per_image(model: nn.Module) -> float:
    """Multiply-accumulates of one forward pass on one image, in millions."""
    x = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    t = torch.zeros(1, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t)
    return counter.get_total_flops() / 2 / 1e6


CLOCK = time.perf_counter  # --clock cpu switches to time.process_time


def seconds(fn: Callable[[], None]) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def wall_seconds(fn: Callable[[], None]) -> float:
    """Elapsed time whatever --clock says: compilation runs partly in worker processes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_ratio(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Median, min and max over rounds of num[i] / den[i]."""
    r = [a / b for a, b in zip(num, den)]
    return statistics.median(r), min(r), max(r)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128, help="batch size of the training and sampling steps (default 128)")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds; the table shows medians (default 7, 3 with --quick)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before timing (default 2, 1 with --quick)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="also time torch.compile (default on)")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: 3 rounds, 1 warm-up step, batch-1000 timed twice")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--big-batch", type=int, default=1000, help="batch of the inference timing (default 1000; 0 skips it)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (default); cpu: this process's CPU time, which other processes on a shared "
        "machine barely disturb (use it with --threads 1: with more threads it also counts threads waiting for each other)",
    )
    p.add_argument("--config", type=str, default="{}", help="JSON overrides of UNetConfig fields for our model")
    args = p.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 1 or args.big_batch < 0:
        p.error("--batch, --repeats and --threads must be >= 1; --warmup and --big-batch >= 0")
    if args.quick:
        args.repeats = min(args.repeats, 3)
        args.warmup = min(args.warmup, 1)
    torch.set_num_threads(args.threads)
    # Compile from scratch every run, as a first run on a fresh machine does; a warm on-disk cache
    # (TorchInductor's default) cuts the compile time to seconds and would make runs incomparable.
    inductor_config.force_disable_caches = True
    warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    try:
        config = UNetConfig.from_dict({**UNetConfig().to_dict(), **json.loads(args.config)})
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        p.error(f"--config: {err}")
    try:
        import diffusers
    except ImportError:
        raise SystemExit("this benchmark needs diffusers: pip install -e .[bench]") from None

    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"
    )
    print(
        f"batch {args.batch}, {args.repeats} rounds after {args.warmup} warm-up steps, compile={args.compile}, "
        f"clock={args.clock}"
    )
    print(f"our config: {config}")

    torch.manual_seed(0)
    diff = DiffusersEps()
    with torch.no_grad():
        out_shape = tuple(diff(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)).shape)
    if out_shape != (2, 1, 28, 28):
        raise RuntimeError(f"diffusers model maps 28x28 to {out_shape}; it would need padding")
    variants = [Variant("diffusers UNet2DModel (course config)", diff, False, False, args.batch, 1)]
    torch.manual_seed(0)
    variants.append(Variant("diffusers + channels_last", DiffusersEps(), True, False, args.batch, 1))
    setups = [("ours", False, False), ("ours + channels_last", True, False)]
    if args.compile:
        setups.append(("ours + channels_last + compile", True, True))
    for name, cl, comp in setups:
        torch.manual_seed(0)
        variants.append(Variant(name, UNet(config), cl, comp, args.batch, 1))

    # Warm-up. The first call of a compiled variant includes its compilation (training and inference graphs apart).
    for v in variants:
        v.first_train_s = wall_seconds(v.train_step)
        v.first_sample_s = wall_seconds(v.sample_step)
        for _ in range(args.warmup):
            v.train_step()
            v.sample_step()

    for r in range(args.repeats):
        for v in variants:
            v.train_s.append(seconds(v.train_step))
        for v in variants:
            v.sample_s.append(seconds(v.sample_step))
        print(f"  round {r + 1}/{args.repeats}: train s/step " + ", ".join(f"{s.train_s[-1]:.3f}" for s in variants), flush=True)

    ref = variants[0]
    B = args.batch
    head = f"{'variant':<38} {'params':>8} {'MMAC/img':>9} {'train img/s':>12} {'x diffusers':>17} {'sample img/s':>13} {'x diffusers':>17}"
    print("\n" + head + "\n" + "-" * len(head))
    for v in variants:
        tr, sa = statistics.median(v.train_s), statistics.median(v.sample_s)
        rt, rt_lo, rt_hi = median_ratio(ref.train_s, v.train_s)
        rs, rs_lo, rs_hi = median_ratio(ref.sample_s, v.sample_s)
        print(
            f"{v.name:<38} {v.params / 1e6:>7.2f}M {v.mmac:>9.1f} {B / tr:>12.1f} {rt:>6.2f} [{rt_lo:4.2f}-{rt_hi:4.2f}]"
            f" {B / sa:>13.1f} {rs:>6.2f} [{rs_lo:4.2f}-{rs_hi:4.2f}]"
        )
    print("ratios: median over rounds of (diffusers time / variant time) in the same round, [min-max]")
    for v in variants:
        if "compile" in v.name:
            tr = statistics.median(v.train_s)
            print(
                f"compile: first training step {v.first_train_s:.1f} s (a step takes {tr:.2f} s), "
                f"first sampling step {v.first_sample_s:.1f} s"
            )

    if args.big_batch:
        n = 2 if args.quick else 3
        Bb = args.big_batch
        print(f"\nforward at batch {Bb} under inference_mode (median of {n} interleaved rounds, after one warm-up call):")
        x = torch.randn(Bb, 1, IMAGE_SIZE, IMAGE_SIZE)
        t = torch.randint(0, T, (Bb,))
        big = []
        for name, cl, comp in setups:
            torch.manual_seed(0)
            fmt = torch.channels_last if cl else torch.contiguous_format
            model = UNet(config).eval().to(memory_format=fmt)
            if comp:
                model = torch.compile(model, dynamic=False)
            xf = x.contiguous(memory_format=fmt)
            call = lambda model=model, xf=xf: model(xf, t)  # noqa: E731
            with torch.inference_mode():
                first = wall_seconds(call)
            big.append((name, comp, call, first, []))
        for _ in range(n):
            for _, _, call, _, times in big:
                with torch.inference_mode():
                    times.append(seconds(call))
        for name, comp, _, first, times in big:
            ms = 1000 * statistics.median(times)
            extra = f" (first call, with compilation, {first:.1f} s)" if comp else ""
            print(f"  {name:<32} {ms:8.0f} ms per forward -> {Bb} images x {T} steps ~ {ms * T / 1000 / 60:.0f} min{extra}")

if __name__ == "__main__":
    main()
