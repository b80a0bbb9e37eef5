"""The image grids that `sample --out` writes: readable digits, upscaled by nearest neighbour."""

import numpy as np
import pytest
import torch
from PIL import Image

import ddpm_tutor.sampling
from ddpm_tutor.__main__ import main
from ddpm_tutor.plotting import save_image_grid

MIN_DIGIT_PX = 56  # a 28 x 28 digit is drawn at least this large


def _digits(n=16, seed=0):
    """n different images on the 256-level grid, in the model range [-1, 1]: (n, 1, 28, 28)."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 256, (n, 1, 28, 28), generator=g)
    return levels.float() / 127.5 - 1, levels.numpy().astype(np.uint8)


def _read(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def _check_grid(grid, pixels, nrow, padding=2):
    """Each digit is a constant s x s block per source pixel (s >= 2), framed by white padding."""
    n = pixels.shape[0]
    rows = -(-n // nrow)
    scale = grid.shape[1] // (nrow * (28 + padding) + padding)
    assert scale * 28 >= MIN_DIGIT_PX
    assert grid.shape == (scale * (rows * (28 + padding) + padding), scale * (nrow * (28 + padding) + padding))
    for k in range(n):
        r, c = divmod(k, nrow)
        top, left = scale * (padding + r * (28 + padding)), scale * (padding + c * (28 + padding))
        block = grid[top : top + 28 * scale, left : left + 28 * scale]
        nearest = np.repeat(np.repeat(pixels[k, 0], scale, axis=0), scale, axis=1)
        np.testing.assert_array_equal(block, nearest, err_msg=f"digit {k}")
    assert (grid[: scale * padding] == 255).all() and (grid[:, : scale * padding] == 255).all()


def test_saved_grid_draws_each_digit_at_least_56_px_by_nearest_neighbour(tmp_path):
    x, pixels = _digits(16)
    path = save_image_grid(x, tmp_path / "grid.png")
    grid = _read(path)
    assert grid.shape == (244, 244)  # 4 x 4 digits of 56 px, 4 px between them
    _check_grid(grid, pixels, nrow=4)


def test_sample_command_writes_the_readable_grid(tmp_path, monkeypatch, capsys):
    x, pixels = _digits(16, seed=1)
    monkeypatch.setattr(ddpm_tutor.sampling, "sample", lambda *args, **kwargs: x)  # the grid, not the sampler
    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", "pretrained", "--n", "16", "--out", str(out), "--device", "cpu"]) == 0
    _check_grid(_read(out), pixels, nrow=4)


@pytest.mark.parametrize("scale", [0, -1])
def test_grid_scale_must_be_positive(tmp_path, scale):
    with pytest.raises(ValueError, match="scale"):
        save_image_grid(torch.zeros(1, 1, 28, 28), tmp_path / "grid.png", scale=scale)
