"""Run by tests/test_distributed.py under ``torchrun``: ``dt.train`` on a tiny conditional U-Net and random images.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_train_worker.py OUT_DIR

Every rank writes ``OUT_DIR/rank{r}.json``: the world it saw, the shape and the time steps ``t`` of every batch
it trained on, and the sha256 of its final weights and EMA, so the test can check the shards and that the ranks agree.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from ddpm_tutor import config as cfg
from ddpm_tutor import distributed
from ddpm_tutor import training as tr
from ddpm_tutor.unet import UNetConfig

# 8x8 images, a conditional U-Net with label dropout, min-SNR weights, channels_last and gradient clipping: every
# path of a training step that depends on the batch
UNET = UNetConfig(channels=(8, 16), num_res_blocks=(1, 1), time_embed_dim=16, attention_heads=2, norm_groups=4, T=50,
                  image_size=8, num_classes=10)
CONFIG = cfg.TrainConfig(
    profile="tiny", steps=4, batch_size=8, lr=2e-3, warmup_steps=1, ema_decay=0.5, T=50, log_every=2,
    checkpoint_every=2, sample_every=0, channels_last=True, loss_weighting="min_snr", label_dropout=0.5, unet=UNET,
)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """64 random images in [-1, 1] and their random labels (the same in every process)."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(64, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 10, (64,), generator=g)


def weights_sha256(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, value in module.state_dict().items():
        h.update(name.encode() + value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    batches: list[dict] = []
    draw = tr._draw_batch

    def recording_draw(*args, **kwargs):  # what this rank trains on at each step
        x0, t, eps, c = draw(*args, **kwargs)
        batches.append({"shape": list(x0.shape), "t": t.tolist()})
        return x0, t, eps, c

    tr._draw_batch = recording_draw
    images, labels = data()
    result = tr.train(CONFIG, data=images, labels=labels, out_dir=out_dir, progress=False)
    world, _ = distributed.setup(None)
    record = {"rank": world.rank, "world_size": world.size, "batches": batches,
              "model": weights_sha256(result.model), "ema": weights_sha256(result.ema_model)}
    Path(out_dir, f"rank{world.rank}.json").write_text(json.dumps(record))
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1])
