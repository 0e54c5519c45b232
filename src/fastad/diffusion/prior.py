"""Diffusion priors: load a diffusers-format ``UNet2DModel`` + noise schedule, always answering eps.

Accepted layouts (``load_prior``):

- pipeline: ``<path>/unet/{config.json, diffusion_pytorch_model.safetensors}`` and
  ``<path>/scheduler/scheduler_config.json`` (a ``model_index.json`` may sit beside them), as
  the public ``google/ddpm-cifar10-32`` checkpoint and :func:`save_prior` write it;
- bare model: ``<path>/{config.json, diffusion_pytorch_model.safetensors, scheduler_config.json}``.

Weights are read from safetensors only (never unpickled). The noise schedule comes from the
scheduler config, never from a default: no config, no prior.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from fastad.diffusion.ddim import to_device
from fastad.errors import UserError
from fastad.utils.io import as_os_error, fsync_dir
from fastad.utils.threads import in_slices

__all__ = ["BETA_SCHEDULES", "PREDICTION_TYPES", "Prior", "load_prior", "build_unet", "save_prior"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")
_LEARNED_VARIANCE = ("learned", "learned_range")


@dataclass
class Prior:
    """A loaded diffusion prior; :meth:`eps_fn` is what samplers and guidance consume."""

    unet: nn.Module  # diffusers UNet2DModel, eval mode, requires_grad False
    alphas_cumprod: Tensor  # float64 CPU [T], cumprod of (1 - betas) recomputed in float64
    num_train_timesteps: int  # T
    sample_shape: tuple[int, int, int]  # (C, H, W) of x_t, pixel space [-1, 1]
    num_class_embeds: Optional[int]  # classes of a class-conditional UNet, None if unconditional
    prediction_type: str  # what the network outputs, as stored: epsilon | v_prediction | sample
    scheduler_config: dict  # the scheduler config as read (for provenance)
    path: str  # folder it was loaded from
    metadata: dict = field(default_factory=dict)  # fastad_prior.json "metadata" (e.g. data seen), if any
    autocast: Optional[torch.dtype] = None  # run the UNet under autocast to this dtype (e.g. bfloat16); None = off
    slice_cpu: bool = True  # EXPERIMENT: no-grad CPU forwards as two batch slices in two threads

    @property
    def conditional(self) -> bool:
        return getattr(self.unet, "class_embedding", None) is not None

    def _labels(self, class_labels: Optional[Tensor], batch: Optional[int], device: torch.device) -> Optional[Tensor]:
        if not self.conditional:
            if class_labels is not None:
                raise UserError(f"prior {self.path} is unconditional; class_labels must be None")
            return None
        if class_labels is None:
            raise UserError(f"prior {self.path} is class-conditional ({self.num_class_embeds} classes); pass class_labels")
        labels = torch.as_tensor(class_labels).to(device=device, dtype=torch.long).reshape(-1)
        if self.num_class_embeds is not None and labels.numel() and not (
            0 <= int(labels.min()) and int(labels.max()) < self.num_class_embeds
        ):
            raise UserError(f"class_labels must lie in [0, {self.num_class_embeds}), got {labels.tolist()[:8]}")
        if batch is not None and labels.numel() != batch:
            raise UserError(f"class_labels has {labels.numel()} entries for a batch of {batch}")
        return labels

    def eps_fn(self, x_t: Tensor, t: Tensor, class_labels: Optional[Tensor] = None) -> Tensor:
        """Predicted noise, whatever the network's parameterisation.

        Args:
            x_t: ``[B, C, H, W]`` noisy sample (cast to the UNet's dtype for the forward).
            t: ``[B]`` (or scalar) integer timesteps in ``[0, T)``.
            class_labels: ``[B]`` class ids for a class-conditional prior, else None.

        Returns:
            eps ``[B, C, H, W]`` in float32 (float64 if the UNet is float64). v and sample
            predictions are converted exactly with ``abar_t`` (computed in float64):
            ``eps = sqrt(abar_t) * v + sqrt(1 - abar_t) * x_t``;
            ``eps = (x_t - sqrt(abar_t) * x0) / sqrt(1 - abar_t)``.
        """
        B = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device).long()
        t = t.expand(B) if t.ndim == 0 else t
        labels = self._labels(class_labels, B, x_t.device)

        def forward(x: Tensor, t: Tensor, *labels: Tensor) -> Tensor:
            with torch.autocast(x.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext():
                return self.unet(x, t, class_labels=labels[0] if labels else None).sample

        args = (x_t.to(self.unet.dtype), t, *(() if labels is None else (labels,)))
        out = in_slices(forward, *args) if self.slice_cpu else forward(*args)
        out = out[:, : self.sample_shape[0]]  # learned-variance models also output a variance half
        dtype = torch.promote_types(out.dtype, torch.float32)
        out = out.to(dtype)
        if self.prediction_type == "epsilon":
            return out
        # Indexed on the device (the schedule copied without blocking), so a GPU loop never waits here.
        abar = to_device(self.alphas_cumprod, x_t.device)
        abar = abar.to(torch.float32 if x_t.device.type == "mps" else torch.float64)[t].view(-1, 1, 1, 1)
        sqrt_abar, sqrt_1m_abar = abar.sqrt().to(dtype), (1 - abar).sqrt().to(dtype)
        x = x_t.to(dtype)
        if self.prediction_type == "v_prediction":
            # v = sqrt(abar) eps - sqrt(1 - abar) x0 and x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
            return sqrt_abar * out + sqrt_1m_abar * x
        return (x - sqrt_abar * out) / sqrt_1m_abar  # "sample": out is x0

    def bind(self, class_labels: Optional[Tensor] = None) -> Callable[[Tensor, Tensor], Tensor]:
        """``eps_fn`` with the conditioning bound: ``(x_t [B, C, H, W], t [B]) -> eps``.

        The conditioning hook: samplers and guidance only see ``(x_t, t)``. Labels are checked now
        (presence, range) and again against the batch size at each call.
        """
        self._labels(class_labels, None, torch.device("cpu"))

        def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
            return self.eps_fn(x_t, t, class_labels)

        return eps_fn


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def read_prior_metadata(path: Union[str, os.PathLike]) -> dict:
    """The ``metadata`` of a prior folder's ``fastad_prior.json`` (e.g. the classes it saw); ``{}`` if absent."""
    meta_file = Path(path) / "fastad_prior.json"
    return _read_json(meta_file).get("metadata", {}) if meta_file.is_file() else {}


def _check_shards(unet_dir: Path) -> None:
    """A sharded prior's index may name only safetensors shards inside its own folder: never a pickle."""
    index = unet_dir / _WEIGHTS[1]
    if (unet_dir / _WEIGHTS[0]).is_file() or not index.is_file():
        return
    shards = _read_json(index).get("weight_map", {})
    if not isinstance(shards, dict) or not shards:
        raise UserError(f"{index} has no weight_map")
    for name in sorted(set(map(str, shards.values()))):
        if not name.endswith(".safetensors") or Path(name).name != name:
            raise UserError(f"{index} names the shard {name!r}; fastad loads safetensors shards beside the index only "
                            "(never unpickles)")
        if not (unet_dir / name).is_file():
            raise UserError(f"{index} names the shard {name!r}, which is not in {unet_dir}")


def _init_keys(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def load_prior(
    path: Union[str, os.PathLike], *, device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32
) -> Prior:
    """Load a diffusers-format prior (see the module docstring for the layouts).

    Raises:
        UserError: unknown layout, text-conditional UNet, weights only in ``.bin``, missing
            scheduler config, unknown beta schedule or prediction type.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

    root = Path(path)
    if not root.is_dir():
        where = "" if root.is_absolute() else f" (relative paths start from the current folder, {Path.cwd()})"
        raise UserError(f"prior path {root} is not a folder{where}")
    if (root / "unet" / "config.json").is_file():
        unet_dir, sched_file = root / "unet", root / "scheduler" / "scheduler_config.json"
    elif (root / "config.json").is_file():
        unet_dir, sched_file = root, root / "scheduler_config.json"
    else:
        raise UserError(f"{root} is not a diffusers prior: expected unet/config.json or config.json")

    unet_cfg = _read_json(unet_dir / "config.json")
    cls_name = unet_cfg.get("_class_name")
    if cls_name == "UNet2DConditionModel":
        raise UserError(f"{unet_dir} holds a text-conditional UNet2DConditionModel, which is not supported yet")
    if cls_name != "UNet2DModel":
        raise UserError(f"{unet_dir}/config.json has _class_name={cls_name!r}; expected UNet2DModel")
    if not any((unet_dir / w).is_file() for w in _WEIGHTS):
        if any(unet_dir.glob("*.bin")):
            raise UserError(f"{unet_dir} has only .bin weights; fastad loads safetensors only (never unpickles)")
        raise UserError(f"{unet_dir} has no {_WEIGHTS[0]}")

    if not sched_file.is_file():
        raise UserError(f"no scheduler config for prior {root}: looked for {sched_file}")
    sched_cfg = _read_json(sched_file)
    # Keys absent from old configs take diffusers' documented defaults (e.g. prediction_type epsilon).
    pred = sched_cfg.get("prediction_type", "epsilon")
    if pred not in PREDICTION_TYPES:
        raise UserError(f"prediction_type={pred!r} in {sched_file} is not supported; choose one of {', '.join(PREDICTION_TYPES)}")
    beta_schedule = sched_cfg.get("beta_schedule", "linear")
    if sched_cfg.get("trained_betas") is None and beta_schedule not in BETA_SCHEDULES:
        raise UserError(f"beta_schedule={beta_schedule!r} in {sched_file} is unknown; choose one of {', '.join(BETA_SCHEDULES)}")
    # The scheduler class only computes the betas; pass it just the keys it takes (no log noise).
    sched_cls = DDIMScheduler if sched_cfg.get("_class_name") == "DDIMScheduler" and beta_schedule != "sigmoid" else DDPMScheduler
    sched = sched_cls.from_config({k: v for k, v in sched_cfg.items() if k in _init_keys(sched_cls)})
    betas = sched.betas.to(torch.float64)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # float64 cumprod (diffusers' is float32)

    in_ch, out_ch = unet_cfg.get("in_channels", 3), unet_cfg.get("out_channels", 3)
    variance = sched_cfg.get("variance_type")
    if not (out_ch == in_ch or (out_ch == 2 * in_ch and variance in _LEARNED_VARIANCE)):
        raise UserError(f"{unet_dir}: out_channels={out_ch} for in_channels={in_ch} (variance_type={variance!r}) is not an eps/v/x0 model")
    size = unet_cfg.get("sample_size")
    if size is None:
        raise UserError(f"{unet_dir}/config.json has no sample_size")
    h, w = (size, size) if isinstance(size, int) else tuple(size)

    _check_shards(unet_dir)
    try:
        unet = UNet2DModel.from_pretrained(unet_dir, use_safetensors=True, local_files_only=True, torch_dtype=dtype,
                                           low_cpu_mem_usage=False)
    except UserError:
        raise
    except Exception as e:  # a corrupt or truncated safetensors file, weights that do not fit the config, ...
        raise UserError(f"cannot load the prior's weights in {unet_dir}: {' '.join(str(e).split())[:200]}") from None
    unet = unet.to(device).eval().requires_grad_(False)
    metadata = read_prior_metadata(root)
    return Prior(
        unet=unet,
        alphas_cumprod=alphas_cumprod,
        num_train_timesteps=int(betas.numel()),
        sample_shape=(int(in_ch), int(h), int(w)),
        num_class_embeds=unet_cfg.get("num_class_embeds"),
        prediction_type=pred,
        scheduler_config=sched_cfg,
        path=str(root),
        metadata=metadata,
    )


def build_unet(
    *,
    sample_size: int,
    in_channels: int,
    block_out_channels: tuple[int, ...] = (32, 64, 64),
    layers_per_block: int = 1,
    attention: bool = False,
    num_class_embeds: Optional[int] = None,
) -> nn.Module:
    """A small diffusers ``UNet2DModel`` predicting eps for ``[B, in_channels, S, S]`` inputs.

    DownBlock2D/UpBlock2D at every level; ``attention=True`` makes the lowest resolution
    AttnDownBlock2D/AttnUpBlock2D. The mid block keeps diffusers' default self-attention (the
    prototype's (32, 64, 64) prior, 1.06M parameters, was built this way). ``sample_size`` must be
    divisible by ``2 ** (len(block_out_channels) - 1)`` (28 works with 3 levels).
    """
    from diffusers import UNet2DModel

    levels = len(block_out_channels)
    if levels < 1 or sample_size % 2 ** (levels - 1):
        raise UserError(f"sample_size={sample_size} must be divisible by 2**(levels-1)={2 ** max(levels - 1, 0)} "
                        f"for block_out_channels={tuple(block_out_channels)}")
    down, up = ["DownBlock2D"] * levels, ["UpBlock2D"] * levels
    if attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=min(32, math.gcd(*block_out_channels)),  # GroupNorm must divide every width
        num_class_embeds=num_class_embeds,
    )


def _sibling(dest: Path, tag: str) -> Path:
    """A fresh hidden folder beside ``dest`` (same filesystem, so ``os.replace`` is atomic)."""
    d = dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{tag}"
    d.mkdir()
    return d


def save_prior(
    path: Union[str, os.PathLike],
    unet: nn.Module,
    *,
    num_train_timesteps: int = 1000,
    beta_schedule: str = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    prediction_type: str = "epsilon",
    metadata: Optional[dict[str, Any]] = None,
    overwrite: bool = False,
) -> Path:
    """Write ``unet`` as a diffusers pipeline folder that :func:`load_prior` reads.

    Layout: ``unet/`` (safetensors), ``scheduler/scheduler_config.json`` (DDIMScheduler),
    ``model_index.json`` (so ``DDIMPipeline.from_pretrained`` also opens it) and
    ``fastad_prior.json`` (``{"metadata": ...}``, e.g. which data the prior saw). Everything is
    written to a hidden temp folder beside ``path`` and renamed into place, so ``path`` is never a
    half-written prior. An existing ``path`` is refused unless ``overwrite``.

    Returns:
        The prior folder.
    """
    from diffusers import DDIMScheduler, __version__

    if beta_schedule not in BETA_SCHEDULES[:3]:  # DDIMScheduler has no sigmoid schedule
        raise UserError(f"beta_schedule={beta_schedule!r} is not allowed; choose one of {', '.join(BETA_SCHEDULES[:3])}")
    if prediction_type not in PREDICTION_TYPES:
        raise UserError(f"prediction_type={prediction_type!r} is not allowed; choose one of {', '.join(PREDICTION_TYPES)}")
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise UserError(f"prior folder {dest} already exists; pass overwrite=True to replace it")
    try:
        meta_text = json.dumps({"fastad_prior_version": 1, "metadata": metadata or {}}, indent=2, sort_keys=True)
    except TypeError as e:
        raise UserError(f"prior metadata is not JSON-serialisable: {e}") from None
    index = {
        "_class_name": "DDIMPipeline",
        "_diffusers_version": __version__,
        "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(dest, "partial")
    try:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        DDIMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            prediction_type=prediction_type,
        ).save_config(tmp / "scheduler")
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        (tmp / "fastad_prior.json").write_text(meta_text)
        _fsync_tree(tmp)  # the files are on disk before the folder is renamed into place
        if dest.exists():  # overwrite: move the old one aside first, drop it only once the new one is in
            old = _sibling(dest, "old")
            os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        err = as_os_error(e)
        if err is not None:  # disk full, size limit: one line naming the folder
            kept = "the previous prior there is unchanged" if dest.exists() else "no prior was written"
            why = os.strerror(err.errno) if err.errno else " ".join(str(err).split())
            raise UserError(f"cannot write prior '{dest}': {why}; {kept}") from None
        raise
    return dest


def _fsync_tree(folder: Path) -> None:
    for p in sorted(folder.rglob("*"), reverse=True):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for d in [*sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True), folder]:
        fsync_dir(d)
