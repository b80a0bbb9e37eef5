"""Small figure helpers the chapters share: image grids and saving them."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .files import atomic_write, image_format

__all__ = ["image_grid", "save_image_grid", "show_images"]


def image_grid(x: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images into one greyscale (or, for RGB images, colour) array.

    Args:
        x: ``(N, 1, H, W)`` or ``(N, H, W)`` float in [-1, 1] (model range; clipped) or uint8 in [0, 255];
            ``(N, 3, H, W)`` for colour images.
        nrow: images per row (default: about sqrt(N)).
        padding: pixels between images.
        pad_value: value of the padding in [0, 1] (1 = white).

    Returns:
        ``(rows * (H + padding) + padding, nrow * (W + padding) + padding)`` float array in [0, 1],
        with a last axis of 3 for colour images.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of images, got {type(x).__name__}")
    if x.dim() == 4:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"x must have one or three channels, shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
        x = x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)  # (N, H, W) or (N, H, W, 3)
    elif x.dim() != 3:
        raise ValueError(f"x must have shape (N, H, W) or (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one image, got shape {tuple(x.shape)}")
    is_pixels = x.dtype == torch.uint8
    x = x.detach().float().cpu()
    x = x / 255.0 if is_pixels else (x.clamp(-1, 1) + 1) / 2
    n, h, w = x.shape[:3]
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, *x.shape[3:]), pad_value,
                   dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top : top + h, left : left + w] = x[i].numpy()
    return grid


def save_image_grid(x: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, scale: int = 2) -> Path:
    """Write :func:`image_grid` of ``x`` (atomically), each pixel drawn ``scale`` x ``scale``, in the image format
    that ``path``'s suffix names (``.png``, ``.jpg``, ...; ``ValueError`` for a suffix Pillow cannot write).
    The file gets the usual mode (``0o666`` minus the umask)."""
    from PIL import Image

    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer (pixels per image pixel, 2 draws a digit at 56 px), got {scale!r}")
    path = Path(path)
    fmt = image_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = (image_grid(x, nrow) * 255).round().astype(np.uint8)
    image = Image.fromarray(grid, mode="L" if grid.ndim == 2 else "RGB").resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def show_images(x: torch.Tensor, nrow: int | None = None, ax=None, title: str | None = None):
    """Draw :func:`image_grid` of ``x`` on a matplotlib axis (a new figure if ``ax`` is None); returns the axis."""
    import matplotlib.pyplot as plt

    if ax is None:
        n = x.shape[0]
        cols = nrow or math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        _, ax = plt.subplots(figsize=(min(10, 0.6 * cols + 1), min(10, 0.6 * rows + 0.6)))
    ax.imshow(image_grid(x, nrow), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
