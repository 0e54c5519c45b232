"""Classifier checkpoints: load public zoo files, save and reload our own.

Reading accepts a raw state dict, ``{'state_dict': ...}`` or ``{'model': ...}`` saved with
``torch.save`` (always unpickled with ``weights_only=True``: a file that needs arbitrary Python
objects is refused, never executed), and ``.safetensors`` files. A leading DDP ``module.`` prefix
is stripped. Our own classifiers are saved as safetensors with a JSON ``fastad`` metadata entry
(arch, num_classes, in_channels, dataset, normalisation, ...), so they rebuild without flags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from fastad.errors import UserError
from fastad.models.registry import create_model, list_models
from fastad.utils.io import atomic_bytes, load_torch_file

__all__ = ["load_weights", "save_classifier", "load_classifier", "read_classifier_meta"]

META_KEY = "fastad"  # safetensors metadata entry holding json.dumps(meta)
_REQUIRED_META = ("arch", "num_classes", "in_channels")  # what rebuilding the model needs
# Plain entries a torch.save'd dict may carry next to its 'state_dict'; read as metadata.
_TORCH_META_KEYS = (
    "arch", "num_classes", "in_channels", "input_size", "dataset", "class_names", "mean", "std", "test_top1",
)
_PLAIN = (str, int, float, bool, list, tuple, type(None))


def _one_line(err: BaseException | str, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt_list(items: list[str], limit: int = 5) -> str:
    """``[a, b, c, ... (+12 more)]``: keeps error messages to one readable line."""
    shown = ", ".join(items[:limit])
    more = f", ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"[{shown}{more}]"


def _is_safetensors(path: Path) -> bool:
    """Check the file exists and tell its format (by content, so any file name works)."""
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative paths start from the current folder, {Path.cwd()})"
        raise UserError(f"checkpoint '{path}' not found{where}")
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' is not a file")
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise UserError(f"cannot read checkpoint '{path}': {_one_line(e)}") from None
    # safetensors: 8-byte little-endian header length, then the JSON header; torch zips start "PK".
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors_meta(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"cannot read checkpoint '{path}' as safetensors: {_one_line(e)}") from None
    if META_KEY not in raw:
        return {}
    try:
        meta = json.loads(raw[META_KEY])
    except json.JSONDecodeError as e:
        raise UserError(f"checkpoint '{path}' has unreadable '{META_KEY}' metadata: {_one_line(e)}") from None
    if not isinstance(meta, dict):
        raise UserError(f"checkpoint '{path}' has '{META_KEY}' metadata that is not a JSON object")
    return meta


def _torch_load(path: Path) -> Any:
    """The one torch reader (:func:`fastad.utils.io.load_torch_file`: ``weights_only=True``, one-line errors)."""
    return load_torch_file(path, "checkpoint")


def _split_torch_obj(obj: Any, path: Path) -> tuple[Mapping[Any, Any], dict[str, Any]]:
    """Find the weights in a torch.load'ed object; plain meta entries beside them come along."""
    if not isinstance(obj, dict):
        raise UserError(f"checkpoint '{path}' holds a {type(obj).__name__}, not a dict of weights")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            meta = {k: obj[k] for k in _TORCH_META_KEYS if k in obj and isinstance(obj[k], _PLAIN)}
            return obj[key], meta
    return obj, {}


def _clean_state_dict(sd: Mapping[Any, Any], path: Path) -> dict[str, torch.Tensor]:
    junk = {str(k): type(v).__name__ for k, v in sd.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))}
    if junk:
        raise UserError(
            f"checkpoint '{path}' is not a state dict: entries {_fmt_list(list(junk))} are not tensors "
            f"({', '.join(sorted(set(junk.values())))})"
        )
    if not sd:
        raise UserError(f"checkpoint '{path}' holds no tensors")
    if all(k.startswith("module.") for k in sd):  # saved from a DDP-wrapped model
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of a torch or safetensors checkpoint; ``meta`` may be empty."""
    path = Path(path)
    if _is_safetensors(path):
        meta = _read_safetensors_meta(path)
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise UserError(f"cannot read checkpoint '{path}' as safetensors: {_one_line(e)}") from None
        return _clean_state_dict(sd, path), meta
    raw, meta = _split_torch_obj(_torch_load(path), path)
    return _clean_state_dict(raw, path), meta


def _load_into(model: nn.Module, sd: dict[str, torch.Tensor], path: str | Path) -> None:
    """Strict load; any difference is reported in one line before anything is copied."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {list(sd[k].shape)} vs model {list(v.shape)}"
        for k, v in own.items()
        if k in sd and sd[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_fmt_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_fmt_list(unexpected)}")
    if shapes:
        more = f", ... (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""
        problems.append("shape mismatch " + ", ".join(shapes[:3]) + more)
    if problems:
        name = getattr(model, "arch", type(model).__name__)
        raise UserError(f"checkpoint '{path}' does not fit {name}: " + "; ".join(problems))
    model.load_state_dict(sd, strict=True)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint's weights into ``model`` in place (strict: keys and shapes must match).

    Raises ``UserError`` for a missing, unreadable or non-weights-only file, or one that does not
    fit the model (the message lists missing/unexpected keys and shape mismatches).
    """
    sd, _ = _read_checkpoint(path)
    _load_into(model, sd, path)


def save_classifier(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``model``'s state dict (buffers included) as safetensors with ``meta`` as metadata.

    ``meta`` must be JSON-serialisable and hold at least ``arch``, ``num_classes`` and
    ``in_channels`` (callers also record input_size, dataset, class_names, mean, std, test_top1).
    The write is atomic: a crash leaves any previous file intact.
    """
    lacking = [k for k in _REQUIRED_META if k not in meta]
    if lacking:
        raise UserError(f"classifier metadata lacks {', '.join(lacking)} (needed to rebuild the model)")
    for key in _REQUIRED_META:  # catch a meta that describes another model
        have = getattr(model, key, None)
        if have is not None and have != meta[key]:
            raise UserError(f"classifier metadata {key}={meta[key]!r} does not match the model's {key}={have!r}")
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise UserError(f"classifier metadata is not JSON-serialisable: {_one_line(e)}") from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_bytes(safetensors_bytes(tensors, metadata={META_KEY: text}), path)


def read_classifier_meta(path: str | Path) -> dict[str, Any]:
    """The metadata saved with a classifier; ``{}`` when the file has none (e.g. a zoo checkpoint)."""
    path = Path(path)
    if _is_safetensors(path):
        return _read_safetensors_meta(path)
    return _split_torch_obj(_torch_load(path), path)[1]


def _infer_from_weights(arch: str, sd: dict[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """``(num_classes, in_channels)`` read off the head and first-conv weights, None if absent."""
    with torch.device("meta"):  # shapes only: no memory, no init cost
        probe = create_model(arch, num_classes=1, in_channels=1)
    head = sd.get(f"{probe.head_name}.weight")
    first_conv = next(k for k, v in probe.state_dict().items() if v.dim() == 4)
    stem = sd.get(first_conv)
    return (
        int(head.shape[0]) if head is not None and head.dim() == 2 else None,
        int(stem.shape[1]) if stem is not None and stem.dim() == 4 else None,
    )


def load_classifier(
    path: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and load a classifier; returns ``(model.eval(), meta)``.

    Keyword args override the file's metadata. ``arch`` must come from one of the two. Without
    metadata (a public zoo ``{'state_dict': ...}`` file) ``num_classes`` and ``in_channels`` are
    read off the final-linear and first-conv weight shapes, which fixes them exactly. The returned
    ``meta`` is the file's, with the resolved ``arch``, ``num_classes`` and ``in_channels``.
    """
    path = Path(path)
    sd, meta = _read_checkpoint(path)
    arch = arch if arch is not None else meta.get("arch")
    if arch is None:
        raise UserError(
            f"checkpoint '{path}' does not record its architecture; pass --arch (one of: {', '.join(list_models())})"
        )
    if not isinstance(arch, str):
        raise UserError(f"checkpoint '{path}' records arch={arch!r}, not a model name; pass --arch")
    n_cls = num_classes if num_classes is not None else meta.get("num_classes")
    in_ch = in_channels if in_channels is not None else meta.get("in_channels")
    if n_cls is None or in_ch is None:
        inferred_cls, inferred_ch = _infer_from_weights(arch, sd)
        n_cls = inferred_cls if n_cls is None else n_cls
        in_ch = inferred_ch if in_ch is None else in_ch
    if n_cls is None:
        raise UserError(
            f"cannot tell num_classes of checkpoint '{path}' (it has no final layer weights for {arch}); "
            "pass --num-classes, or check --arch"
        )
    if in_ch is None:
        raise UserError(
            f"cannot tell in_channels of checkpoint '{path}' (it has no first conv weights for {arch}); "
            "pass --in-channels, or check --arch"
        )
    model = create_model(arch, num_classes=n_cls, in_channels=in_ch)
    _load_into(model, sd, path)
    return model.to(map_location).eval(), {**meta, "arch": arch, "num_classes": n_cls, "in_channels": in_ch}
