"""Replay buffer: FIFO order and eviction, bounded memory, seeded sampling, exact checkpoints,
and the stated quantisation error of each storage format."""

from __future__ import annotations

import io

import pytest
import torch

from fastad.buffer import ReplayBuffer
from fastad.errors import UserError

SHAPE = (1, 4, 4)


def _batch(first_label: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel encodes the label exactly in uint8 (k/127.5 - 1), labels first..first+b-1."""
    labels = torch.arange(first_label, first_label + b)
    images = (labels.float() / 127.5 - 1).view(b, 1, 1, 1).expand(b, *SHAPE).clone()
    return images, labels


def _ordered_labels(buf: ReplayBuffer) -> list[int]:
    return buf.newest(buf.capacity)[1].tolist()


def test_fifo_order_and_eviction() -> None:
    buf = ReplayBuffer(5)
    buf.push(*_batch(0, 3))
    assert len(buf) == 3 and _ordered_labels(buf) == [0, 1, 2]
    buf.push(*_batch(3, 4))  # wraps: 0 and 1 are dropped
    assert len(buf) == 5 and _ordered_labels(buf) == [2, 3, 4, 5, 6] and buf.images_seen == 7
    images, labels = buf.newest(2)
    assert labels.tolist() == [5, 6]
    torch.testing.assert_close(images, _batch(5, 2)[0], atol=0, rtol=0)  # labels travel with their images


def test_batch_larger_than_capacity_keeps_the_newest() -> None:
    buf = ReplayBuffer(4)
    buf.push(*_batch(0, 2))
    buf.push(*_batch(10, 7))
    assert _ordered_labels(buf) == [13, 14, 15, 16] and buf.images_seen == 9
    buf.push(*_batch(20, 1))
    assert _ordered_labels(buf) == [14, 15, 16, 20]


def test_memory_is_bounded_by_capacity() -> None:
    buf = ReplayBuffer(16, storage="uint8")
    assert buf.nbytes == 0  # lazy: nothing allocated before the first push
    buf.push(torch.zeros(3, 3, 8, 8), torch.zeros(3, dtype=torch.long))
    storage = buf._images
    nbytes = buf.nbytes
    assert storage.dtype == torch.uint8 and storage.numel() == 16 * 3 * 8 * 8
    assert nbytes == 16 * 3 * 8 * 8 + 16 * 8
    for i in range(50):
        buf.push(torch.rand(7, 3, 8, 8) * 2 - 1, torch.full((7,), i % 10))
    assert len(buf) == 16 and buf.nbytes == nbytes and buf._images is storage  # same tensor, never grown
    assert buf.images_seen == 3 + 350


def test_sample_is_uniform_without_replacement_and_deterministic() -> None:
    buf = ReplayBuffer(32)
    buf.push(*_batch(0, 20))
    a = buf.sample(20, generator=torch.Generator().manual_seed(3))
    b = buf.sample(20, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert sorted(a[1].tolist()) == list(range(20))  # n <= len: a permutation, no repeats
    images, labels = buf.sample(50, generator=torch.Generator().manual_seed(4))  # n > len: with replacement
    assert labels.shape == (50,) and images.shape == (50, *SHAPE) and images.dtype == torch.float32
    assert set(labels.tolist()) <= set(range(20))
    # roughly uniform: every image is drawn over many small batches
    g = torch.Generator().manual_seed(5)
    counts = torch.bincount(torch.cat([buf.sample(4, generator=g)[1] for _ in range(500)]), minlength=20)
    assert counts.min() > 60 and counts.max() < 150  # expectation 100 each


@pytest.mark.parametrize("storage", ["uint8", "float16"])
def test_state_dict_round_trip_is_exact(storage: str) -> None:
    buf = ReplayBuffer(6, storage=storage)
    g = torch.Generator().manual_seed(0)
    for i in range(3):  # 9 images into 6 slots: wrapped
        buf.push(torch.rand(3, *SHAPE, generator=g) * 2 - 1, torch.arange(3) + 3 * i)
    f = io.BytesIO()
    torch.save(buf.state_dict(), f)
    f.seek(0)
    state = torch.load(f, weights_only=True)
    restored = ReplayBuffer(6, storage=storage)
    restored.load_state_dict(state)
    assert len(restored) == len(buf) and restored.images_seen == 9
    for name in ("_images", "_labels"):
        assert torch.equal(getattr(restored, name), getattr(buf, name))
    a = buf.sample(4, generator=torch.Generator().manual_seed(1))
    b = restored.sample(4, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # both continue identically
    nxt = (torch.rand(2, *SHAPE, generator=g) * 2 - 1, torch.tensor([7, 8]))
    buf.push(*nxt)
    restored.push(*nxt)
    assert torch.equal(buf._images, restored._images) and _ordered_labels(buf) == _ordered_labels(restored)
    # a partially filled buffer round-trips too, including its free slots
    part = ReplayBuffer(6, storage=storage)
    part.push(*_batch(0, 2))
    again = ReplayBuffer(6, storage=storage)
    again.load_state_dict(part.state_dict())
    assert torch.equal(again._images, part._images) and again.newest(6)[1].tolist() == [0, 1]


def test_quantisation_error_bounds() -> None:
    """uint8: |x - x_hat| <= 1/255 (half a step of 2/255); float16: <= 2**-12 (half an ulp in [0.5, 1))."""
    x = torch.cat([torch.linspace(-1, 1, 4001), torch.rand(4000) * 2 - 1]).view(-1, 1, 1, 1)
    labels = torch.zeros(len(x), dtype=torch.long)
    for storage, bound in (("uint8", 1 / 255), ("float16", 2.0**-12)):
        buf = ReplayBuffer(len(x), storage=storage)
        buf.push(x, labels)
        err = (buf.newest(len(x))[0] - x).abs().max().item()
        assert err <= bound + 1e-7, (storage, err)
        assert err > bound / 2  # the bound is tight, not loose by orders of magnitude
    buf = ReplayBuffer(2)
    buf.push(torch.tensor([-3.0, 7.0]).view(2, 1, 1, 1), torch.zeros(2, dtype=torch.long))  # clamped at push
    assert buf.newest(2)[0].flatten().tolist() == [-1.0, 1.0]


def test_bad_inputs_raise_user_error() -> None:
    for cap in (0, -3, 2.5, True):
        with pytest.raises(UserError, match="capacity"):
            ReplayBuffer(cap)
    with pytest.raises(UserError, match="storage"):
        ReplayBuffer(4, storage="int8")
    buf = ReplayBuffer(4, image_shape=(1, 4, 4))
    with pytest.raises(UserError, match="shape"):
        buf.push(torch.zeros(2, 1, 5, 5), torch.zeros(2, dtype=torch.long))
    buf.push(*_batch(0, 2))
    with pytest.raises(UserError, match="labels"):
        buf.push(torch.zeros(2, *SHAPE), torch.zeros(3, dtype=torch.long))
    with pytest.raises(UserError, match="NaN"):
        buf.push(torch.full((1, *SHAPE), float("nan")), torch.zeros(1, dtype=torch.long))
    with pytest.raises(UserError, match="empty"):
        ReplayBuffer(3).sample(1, generator=None)
    with pytest.raises(UserError, match="capacity"):
        ReplayBuffer(5).load_state_dict(buf.state_dict())
    with pytest.raises(UserError, match="stores float16"):
        ReplayBuffer(4, storage="float16").load_state_dict(buf.state_dict())


def test_push_and_sample_name_the_slots() -> None:
    """Slots let per-image data (the KD steps' teacher-logit cache) live beside the buffer."""
    buf = ReplayBuffer(5)
    assert buf.push(*_batch(0, 3)).tolist() == [0, 1, 2]
    assert buf.push(*_batch(3, 4)).tolist() == [3, 4, 0, 1]  # wraps over the oldest
    assert buf.push(*_batch(7, 0)).tolist() == []
    images, labels, slots = buf.sample(5, generator=torch.Generator().manual_seed(2), slots=True)
    plain = buf.sample(5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(images, plain[0]) and torch.equal(labels, plain[1])  # the same draw
    assert labels.tolist() == [[5, 6, 2, 3, 4][s] for s in slots.tolist()]
