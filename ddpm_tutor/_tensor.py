"""The one broadcasting helper and the argument checks every module shares."""

from __future__ import annotations

import torch

__all__ = ["extract", "check_t", "check_same_shape", "check_choice", "check_float_data", "PIXEL_SCALE",
           "check_model_output", "check_finite", "check_model_T", "resolve_device"]

#: Values beyond +-PIXEL_SCALE cannot be data in the model's range [-1, 1], nor the book's standardised toy
#: data (a few standard deviations): they are pixels that were not converted (0..255).
PIXEL_SCALE = 10.0

_TO_MODEL_RANGE = "convert uint8 pixels 0..255 with ddpm_tutor.data.to_model_range(images)"


def check_t(t: torch.Tensor | int, T: int, batch: int | None = None, name: str = "t") -> torch.Tensor:
    """Validate a timestep argument and return it as a 1-D ``int64`` tensor.

    Code steps run ``t = 0..T-1``; code step ``t`` is the paper's step ``t + 1``
    (so ``t = 0`` is the paper's first noising step ``x_0 -> x_1``).

    ``t`` may be a Python ``int`` (broadcast to ``batch``), a 0-d integer tensor,
    or a 1-D integer tensor of length ``batch``.
    """
    if isinstance(t, bool):
        raise TypeError(f"{name} must be an int or an integer tensor, got bool")
    if isinstance(t, int):
        _check_range(t, t, T, name)
        return torch.full((batch if batch is not None else 1,), t, dtype=torch.long)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(
            f"{name} must hold integer timesteps (torch.long), got dtype {t.dtype}; "
            f"use {name}.long() or torch.randint(...)"
        )
    if t.dim() == 0:
        t = t.reshape(1).expand(batch if batch is not None else 1)
    elif t.dim() != 1:
        raise ValueError(f"{name} must be 0-d or 1-D of shape (B,), got shape {tuple(t.shape)}")
    elif batch is not None and t.shape[0] not in (1, batch):
        raise ValueError(f"{name} has shape {tuple(t.shape)} but the batch size is {batch}; pass one timestep per sample")
    elif batch is not None and t.shape[0] == 1 and batch != 1:
        t = t.expand(batch)
    t = t.long()
    # Reading values back from a GPU makes the CPU wait for it (a sync at every training and sampling step),
    # so the range is read only from CPU tensors. On CUDA an asynchronous device-side assertion stands in:
    # it fails the run (at a later kernel launch) instead of letting a negative t wrap around to a[T + t].
    if t.numel():
        if t.device.type == "cpu":
            _check_range(int(t.min()), int(t.max()), T, name)
        elif t.device.type == "cuda":
            torch._assert_async(((t >= 0) & (t < T)).all(), f"{name} must lie in 0..T-1 = 0..{T - 1}")
    return t


def _check_range(lo: int, hi: int, T: int, name: str) -> None:
    if lo < 0 or hi > T - 1:
        raise ValueError(
            f"{name} must lie in 0..T-1 = 0..{T - 1} (code step t is the paper's step t+1), got values in [{lo}, {hi}]"
        )


def extract(a: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gather ``a[t]`` and shape it to broadcast against ``x``.

    Args:
        a: per-step coefficients, shape ``(T,)`` (any float dtype).
        t: integer timesteps, shape ``(B,)`` with ``B == x.shape[0]``.
        x: the tensor the result will multiply, shape ``(B, *rest)``.

    Returns:
        ``a[t]`` as ``x.dtype`` on ``x.device`` with shape ``(B, 1, ..., 1)``
        (one trailing 1 per dimension of ``rest``).
    """
    if a.dim() != 1:
        raise ValueError(f"coefficients must be 1-D of shape (T,), got shape {tuple(a.shape)}")
    if t.dim() != 1:
        raise ValueError(f"t must be 1-D of shape (B,), got shape {tuple(t.shape)}")
    if x.dim() < 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"rank/batch mismatch: t has shape {tuple(t.shape)} but x has shape {tuple(x.shape)}; "
            "t needs one entry per sample along x's first dimension"
        )
    out = a.to(device=x.device)[t.to(a.device if a.device == x.device else x.device)]
    out = out.to(dtype=x.dtype) if x.is_floating_point() else out
    return out.reshape(t.shape[0], *([1] * (x.dim() - 1)))


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_choice(value: str, choices: tuple[str, ...], name: str) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_float_data(x: torch.Tensor, name: str, model_range: bool = False, values: bool = True) -> None:
    """Raise unless ``x`` is real floating-point data of the model's scale; the message names the conversion.

    Integer (e.g. ``uint8`` pixels), boolean and complex tensors are refused (``TypeError``). Values are
    checked (``ValueError``) only where that costs no wait on an accelerator, i.e. for CPU tensors, or where
    the caller asks with ``model_range=True`` (a public boundary called once, such as the bound): then every
    value must lie in [-1, 1]; otherwise values beyond +-:data:`PIXEL_SCALE` are refused as unconverted pixels.
    ``values=False`` checks the dtype only (for a step run many times in a loop).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor in [-1, 1], got dtype {x.dtype}; {_TO_MODEL_RANGE}")
    if not values or x.numel() == 0 or not (model_range or x.device.type == "cpu"):
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    bound = 1.0 + 1e-3 if model_range else PIXEL_SCALE
    # NaN passes here unless model_range is asked for: a NaN batch in training is reported as a NaN loss
    if lo < -bound or hi > bound or (model_range and not -bound <= lo <= hi <= bound):
        raise ValueError(
            f"{name} must hold data in the model's range [-1, 1], got values in [{lo:.4g}, {hi:.4g}]; {_TO_MODEL_RANGE}"
        )


def check_model_output(eps_theta: object, xt: torch.Tensor) -> torch.Tensor:
    """Return ``eps_theta`` if it is what ``model(xt, t)`` must return: a float tensor shaped like ``xt``.

    A model returning ``None``, a tuple, a NumPy array or a tensor of another shape gets a ``TypeError``
    (``ValueError`` for the shape) that says what the model must return. Costs no wait on an accelerator.
    """
    if not isinstance(eps_theta, torch.Tensor):
        hint = (" (it returned a tuple or list: wrap it, e.g. lambda xt, t: net(xt, t)[0])"
                if isinstance(eps_theta, (tuple, list)) else "")
        raise TypeError(
            f"model(xt, t) must return eps_theta, a torch.Tensor shaped like xt {tuple(xt.shape)}, "
            f"got {type(eps_theta).__name__}{hint}"
        )
    if not eps_theta.is_floating_point():
        raise TypeError(f"model(xt, t) must return a floating-point eps_theta, got dtype {eps_theta.dtype}")
    if eps_theta.shape != xt.shape:
        raise ValueError(
            f"model(xt, t) must return eps_theta shaped like xt {tuple(xt.shape)}, got {tuple(eps_theta.shape)}"
        )
    return eps_theta


def check_finite(x: torch.Tensor, what: str, step: int | None = None) -> torch.Tensor:
    """Return ``x``, or raise ``FloatingPointError`` naming ``what`` (and the code ``step``) if it holds NaN or inf.

    This waits for ``x`` to be computed (a host sync on an accelerator). The test is one sum, which NaN and inf
    make non-finite (a single reduction, several times faster than ``isfinite(x).all()`` on a CPU); only then
    are the values counted (a sum that overflowed from finite values passes).
    """
    if not bool(torch.isfinite(x.sum())):
        bad = int((~torch.isfinite(x)).sum())
        if bad == 0:
            return x
        at = f" at code step t={step}" if step is not None else ""
        raise FloatingPointError(
            f"{what} became non-finite{at} ({bad} of {x.numel()} values are NaN or inf): stopped there instead of "
            "returning NaN. The model's weights or output are broken: check that the checkpoint loads finite "
            "weights and that model(xt, t) returns finite values"
        )
    return x


def check_model_T(model: object, T: int) -> None:
    """Raise ``ValueError`` unless a model that knows its number of diffusion steps (``model.config.T``) has ``T``."""
    config = getattr(model, "config", None)
    model_T = getattr(config, "T", None)
    if isinstance(model_T, int) and model_T != T:
        raise ValueError(
            f"the model was built for T={model_T} diffusion steps but the schedule has T={T}; sample and evaluate "
            f"with the schedule it was trained with (load_model returns both), e.g. build_schedule(config)"
        )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` that this machine has (None: CUDA if available, else the CPU).

    ``ValueError`` naming the fix for a name torch does not know (``"bogus"``) or a device that is absent
    (``"cuda"`` without CUDA, ``"cuda:3"`` on a machine with one GPU).
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device={str(device)!r} is not a torch device; use 'cpu', or 'cuda' on a GPU") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={str(device)!r} needs CUDA, which this machine or this torch build ({torch.__version__}) "
                "does not have; use device 'cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={str(device)!r}: MPS is not available on this machine; use device 'cpu'")
    return dev
