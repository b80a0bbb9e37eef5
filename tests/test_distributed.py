"""Training in several processes (torchrun, DistributedDataParallel over gloo on the CPU): seconds each."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import ddpm_tutor as dt
from ddpm_tutor import checkpoints as ck
from ddpm_tutor import config as cfg
from ddpm_tutor import distributed
from ddpm_tutor import training as tr

import ddp_train_worker as worker

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]  # a free port each
needs_mnist = pytest.mark.skipif(not os.environ.get("DDPM_TUTOR_DATA"),
                                 reason="set DDPM_TUTOR_DATA to the folder holding the real MNIST files")
#: Two processes and one take the same steps up to the order of floating-point sums (measured after the worker's
#: 4 steps: at most 1.1e-6 on a weight, 7e-7 on the EMA)
TOLERANCE = 1e-5


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in distributed.ENV_VARS}
    return {**env, "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}


def _run(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_one_process_has_no_process_group(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    world, device = distributed.setup(None)
    assert (world.rank, world.size, world.distributed, device) == (0, 1, False, None)
    assert distributed.shard(8, world) == slice(0, 8) and not torch.distributed.is_initialized()


def test_shards_tile_the_global_batch_and_an_uneven_one_is_refused():
    assert [distributed.shard(12, distributed.World(r, 3)) for r in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    with pytest.raises(ValueError, match=r"--batch-size.* is 10, which does not divide among 4 processes.*--batch-size 12 or 8"):
        distributed.shard(10, distributed.World(1, 4))


def test_train_refuses_a_batch_that_does_not_divide_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setattr(tr, "setup", lambda device: (distributed.World(0, 3), device))
    with pytest.raises(ValueError, match="is 8, which does not divide among 3 processes"):
        tr.train(worker.CONFIG, data=worker.data()[0], labels=worker.data()[1], out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_two_processes_take_the_steps_of_one_and_their_checkpoint_loads_in_one(tmp_path):
    """2 ranks of batch 4 = 1 process of batch 8: the same global batches, the same weights and EMA (to TOLERANCE),
    identical on both ranks; rank 0's checkpoint holds world_size 2, no ``module.`` prefixes, and loads here."""
    out = tmp_path / "two"
    _run([*TORCHRUN, str(REPO / "tests" / "ddp_train_worker.py"), str(out)])
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["rank"] for r in ranks] == [0, 1]

    images, labels = worker.data()
    draws = []
    draw = tr._draw_batch
    one_record = lambda *a, **k: draws.append(draw(*a, **k)) or draws[-1]  # noqa: E731
    tr._draw_batch = one_record
    try:
        one = tr.train(worker.CONFIG, data=images, labels=labels, out_dir=tmp_path / "one", progress=False)
    finally:
        tr._draw_batch = draw
    # each rank trained on its own half of the global batch one process draws (a wrong shard fails here)
    for step, (_, t, _, _) in enumerate(draws):
        assert [r["batches"][step]["shape"][0] for r in ranks] == [4, 4]
        assert ranks[0]["batches"][step]["t"] + ranks[1]["batches"][step]["t"] == t.tolist()
    # the ranks hold the same weights and the same EMA (an all-reduce left out fails here)
    assert ranks[0]["model"] == ranks[1]["model"] and ranks[0]["ema"] == ranks[1]["ema"]

    ckpt = ck.load_checkpoint(out / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4
    assert ck.load_checkpoint(tmp_path / "one" / "checkpoint.pt")["world_size"] == 1
    assert not any(k.startswith("module.") for k in ckpt["model"]) and ckpt["model"].keys() == one.model.state_dict().keys()
    start = dt.UNet(worker.UNET).state_dict()  # the weights both started from (seeded alike)
    for which, here in (("model", one.model), ("ema", one.ema_model)):
        moved = max((v - start[k]).abs().max().item() for k, v in here.state_dict().items() if v.is_floating_point())
        assert moved > 1000 * TOLERANCE  # training moved the weights far more than the tolerance
        for name, value in here.state_dict().items():
            torch.testing.assert_close(ckpt[which][name], value, rtol=0, atol=TOLERANCE, msg=f"{which} {name}")
    assert ckpt["history"]["loss"] == pytest.approx(one.history["loss"], rel=1e-5)  # the logged loss: the global batch's
    model, _, _ = ck.load_model(out / "checkpoint.pt")  # a torchrun checkpoint loads in one process
    x = torch.zeros(2, 1, 8, 8)
    assert model(x, torch.tensor([0, 49]), labels=torch.tensor([3, 10])).shape == x.shape


@needs_mnist
def test_a_killed_torchrun_run_resumes_with_the_same_command(tmp_path):
    """`torchrun ... -m ddpm_tutor train` on the smoke profile, killed after a checkpoint, then the same command."""
    out = tmp_path / "run"
    command = [*TORCHRUN, "-m", "ddpm_tutor", "train", "--profile", "smoke", "--steps", "20", "--batch-size", "16",
               "--set", "checkpoint_every=4", "--set", "log_every=4", "--set", "sample_every=10", "--out", str(out)]
    run = subprocess.Popen(command, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():
        assert run.poll() is None, f"the run ended before its first checkpoint:\n{run.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)  # `kill`: torchrun stops both workers
    run.communicate(timeout=60)
    killed_at = ck.load_checkpoint(out / "checkpoint.pt")["step"]
    assert run.returncode != 0 and killed_at < 20, "the run finished before it was killed: nothing to resume"

    done = _run(command)
    assert f"trained {20 - killed_at} steps" in done.stdout  # it continued from the checkpoint, not from step 0
    assert done.stdout.count("profile smoke") == 1  # rank 0 alone speaks
    ckpt = ck.load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 20 and ckpt["world_size"] == 2 and ckpt["history"]["step"] == list(range(4, 24, 4))
    assert ckpt["sample_steps"] == [10, 20]  # rank 0 drew the sample grids

    # one more step in one process, then one more in two: a checkpoint of either kind continues in the other
    config = cfg.TrainConfig.from_dict(ckpt["train_config"])
    more = tr.train(replace(config, steps=21), data_root=os.environ["DDPM_TUTOR_DATA"], out_dir=out, progress=False)
    assert more.steps_run == 1 and ck.load_checkpoint(out / "checkpoint.pt")["world_size"] == 1
    again = _run([*command[:command.index("--steps") + 1], "22", *command[command.index("--steps") + 2:]])
    assert "trained 1 steps" in again.stdout and ck.load_checkpoint(out / "checkpoint.pt")["world_size"] == 2
