"""FIFO replay buffer of synthetic images over preallocated CPU tensors (the paper's Sec. 3.5; docs/method.md).

Images arrive in prior space [-1, 1] and are stored compactly: ``uint8`` (``round((x + 1) / 2 * 255)``,
max abs error 1/255 in [-1, 1] space, half a quantisation step of 2/255) or ``float16`` (max abs
error 2**-12 for |x| <= 1, half an ulp at [0.5, 1)). Values outside [-1, 1] are clamped at push.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from fastad.errors import UserError

__all__ = ["ReplayBuffer", "STORAGES"]

STORAGES = {"uint8": torch.uint8, "float16": torch.float16}


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class ReplayBuffer:
    """Ring buffer of ``capacity`` images [C, H, W] with int64 labels.

    Storage is allocated on the first push (from that batch's image shape, or ``image_shape``) and
    never grows: memory is ``capacity * C * H * W`` bytes (uint8) or twice that (float16), plus
    labels. The oldest images are overwritten first. Each image sits in a slot (``0..capacity-1``) from
    its push until it is overwritten: :meth:`push` returns the slots it wrote and :meth:`sample` can say
    which slots it drew, so a caller can keep per-image data beside the buffer.

    Args:
        capacity: maximum number of images held.
        image_shape: ``(C, H, W)`` every push must match; None = taken from the first push.
        storage: ``"uint8"`` or ``"float16"``.
    """

    def __init__(self, capacity: int, *, image_shape: Optional[Sequence[int]] = None, storage: str = "uint8") -> None:
        self._capacity = _count("capacity", capacity)
        if storage not in STORAGES:
            raise UserError(f"storage={storage!r} is not allowed; choose one of {', '.join(STORAGES)}")
        self.storage = storage
        self.image_shape: Optional[tuple[int, ...]] = None
        if image_shape is not None:
            shape = tuple(image_shape)
            if len(shape) != 3:
                raise UserError(f"image_shape must be (C, H, W), got {image_shape!r}")
            self.image_shape = tuple(_count("image_shape entries", s) for s in shape)
        self._images: Optional[Tensor] = None  # [capacity, C, H, W] uint8 / float16
        self._labels: Optional[Tensor] = None  # [capacity] int64
        self._size = 0  # filled slots; while not full they are slots [0, size)
        self._next = 0  # slot the next image goes to
        self.images_seen = 0  # images ever pushed (including those dropped)

    @property
    def capacity(self) -> int:
        """Maximum number of images held."""
        return self._capacity

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Bytes of the allocated storage (0 before the first push)."""
        return sum(t.numel() * t.element_size() for t in (self._images, self._labels) if t is not None)

    # --- quantisation ---------------------------------------------------------------------------

    def _encode(self, x: Tensor) -> Tensor:
        x = x.detach().float().clamp(-1, 1)  # values outside [-1, 1] are clamped
        if self.storage == "uint8":
            return ((x + 1) * 127.5).round().to(torch.uint8)
        return x.to(torch.float16)

    def _decode(self, q: Tensor) -> Tensor:
        if self.storage == "uint8":
            return q.float() / 127.5 - 1
        return q.float()

    # --- push / sample --------------------------------------------------------------------------

    def push(self, images: Tensor, labels: Tensor) -> Tensor:
        """Append a batch, dropping the oldest images beyond capacity; returns the slots written (int64, CPU).

        Args:
            images: ``[B, C, H, W]`` float in prior space [-1, 1] (any device; clamped, quantised,
                copied to CPU). Non-finite values are refused.
            labels: ``[B]`` integer class ids.

        A batch larger than the capacity keeps its newest (last) ``capacity`` images.
        """
        if images.ndim != 4 or not images.is_floating_point():
            raise UserError(f"push: images must be a float [B, C, H, W] tensor, "
                            f"got {images.dtype} {list(images.shape)}")
        b, shape = images.shape[0], tuple(images.shape[1:])
        if self.image_shape is not None and shape != self.image_shape:
            raise UserError(f"push: image shape {list(shape)} does not match the buffer's {list(self.image_shape)}")
        labels = torch.as_tensor(labels)
        if labels.shape != (b,) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise UserError(f"push: labels must be an integer tensor [{b}], got {labels.dtype} {list(labels.shape)}")
        if not bool(torch.isfinite(images).all()):
            raise UserError("push: images contain NaN or inf")
        if b == 0:
            return torch.zeros(0, dtype=torch.int64)
        if self._images is None:  # lazy allocation: the only allocation this buffer ever makes
            self.image_shape = shape
            self._images = torch.zeros((self._capacity, *shape), dtype=STORAGES[self.storage])
            self._labels = torch.zeros(self._capacity, dtype=torch.int64)

        self.images_seen += b
        keep = min(b, self._capacity)  # only the newest `capacity` of the batch can survive
        idx = (self._next + torch.arange(keep)) % self._capacity
        self._images[idx] = self._encode(images[b - keep:]).cpu()
        self._labels[idx] = labels[b - keep:].detach().to("cpu", torch.int64)
        self._next = (self._next + keep) % self._capacity
        self._size = min(self._size + keep, self._capacity)
        return idx

    def sample(self, n: int, *, generator: Optional[torch.Generator],
               device: torch.device | str | None = None, slots: bool = False) -> tuple[Tensor, ...]:
        """Draw ``n`` stored images uniformly at random.

        Without replacement when ``n <= len(self)`` (a batch never repeats an image), with
        replacement otherwise. Indices come from ``generator`` (the default generator when None),
        so a seeded generator gives the same draw.

        Returns:
            ``(images [n, C, H, W] float32 in [-1, 1], labels [n] int64)`` on ``device`` (CPU by default;
            dequantised there, so a uint8 buffer sends 4x fewer bytes to a GPU), plus the drawn slots
            ``[n]`` (int64, CPU) when ``slots`` (the draw is the same either way).
        """
        _count("sample n", n)
        if self._size == 0:
            raise UserError("sample: the replay buffer is empty")
        gdev = generator.device if generator is not None else "cpu"
        if n <= self._size:
            idx = torch.randperm(self._size, generator=generator, device=gdev)[:n].cpu()
        else:
            idx = torch.randint(0, self._size, (n,), generator=generator, device=gdev).cpu()
        return (*self._gather(idx, device), idx) if slots else self._gather(idx, device)

    def newest(self, n: int, *, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """The ``min(n, len)`` most recently pushed images, oldest first; same outputs as :meth:`sample`."""
        _count("newest n", n)
        k = min(n, self._size)
        return self._gather((self._next - k + torch.arange(k)) % self._capacity, device)

    def _gather(self, idx: Tensor, device: torch.device | str | None) -> tuple[Tensor, ...]:
        if self._images is None:
            raise UserError("the replay buffer is empty")
        return self._decode(self._images[idx].to(device)), self._labels[idx].to(device)

    # --- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, object]:
        """Tensors and ints only (loads with ``torch.load(weights_only=True)``); copies, not views.

        The storage format is implied by the images' dtype; only filled slots are saved.
        """
        state: dict[str, object] = {"capacity": self._capacity, "size": self._size, "next": self._next,
                                    "images_seen": self.images_seen}
        if self._images is not None:
            state["images"] = self._images[: self._size].clone()
            state["labels"] = self._labels[: self._size].clone()
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore from :meth:`state_dict` exactly; the capacity and storage must match this buffer's."""
        if state.get("capacity") != self._capacity:
            raise UserError(f"replay buffer: checkpoint capacity {state.get('capacity')} "
                            f"!= this buffer's {self._capacity}")
        size, nxt = int(state["size"]), int(state["next"])
        if not (0 <= size <= self._capacity and 0 <= nxt < self._capacity):
            raise UserError(f"replay buffer: bad checkpoint size={size} next={nxt} for capacity {self._capacity}")
        self._images = self._labels = None
        self._size, self._next, self.images_seen = 0, 0, int(state["images_seen"])
        if "images" not in state:
            if size:
                raise UserError("replay buffer: checkpoint has size > 0 but no images")
            return
        images, labels = state["images"], state["labels"]
        if images.dtype != STORAGES[self.storage]:
            raise UserError(f"replay buffer: checkpoint images are {images.dtype}, this buffer stores {self.storage}")
        shape = tuple(images.shape[1:])
        if self.image_shape is not None and shape != self.image_shape:
            raise UserError(f"replay buffer: checkpoint image shape {list(shape)} != {list(self.image_shape)}")
        if images.shape[0] != size or labels.shape != (size,):
            raise UserError(f"replay buffer: checkpoint holds {images.shape[0]} images for size={size}")
        self.image_shape = shape
        self._images = torch.zeros((self._capacity, *shape), dtype=images.dtype)
        self._labels = torch.zeros(self._capacity, dtype=torch.int64)
        self._images[:size], self._labels[:size] = images, labels
        self._size, self._next = size, nxt
