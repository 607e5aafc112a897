# SPDX-License-Identifier: MIT
"""Batched augmentation: every crop is a window of the zero-padded image, flips are exact,
draws are reproducible from a generator, dtypes are kept."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from onelip.data.augment import augment, check_augment, random_crop, random_flip


def _windows(img, pad):
    p = F.pad(img, (pad,) * 4)
    h, w = img.shape[-2:]
    return [p[..., i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]


def test_each_crop_is_a_window_of_the_padded_image_and_offsets_vary():
    x = torch.randint(1, 256, (64, 3, 6, 5), dtype=torch.uint8)
    out = random_crop(x, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    seen = set()
    for k in range(x.shape[0]):
        hits = [i for i, w in enumerate(_windows(x[k], 2)) if torch.equal(w, out[k])]
        assert hits, f"crop {k} is not a window of the padded image"
        seen.add(hits[0])
    assert len(seen) >= 10, f"only {len(seen)} distinct offsets in 64 draws"


def test_flip_is_exact_and_about_half():
    x = torch.randn(400, 2, 3, 4)
    out = random_flip(x, generator=torch.Generator().manual_seed(1))
    same = [torch.equal(a, b) for a, b in zip(out, x)]
    flipped = [torch.equal(a, b.flip(-1)) for a, b in zip(out, x)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 150 < sum(flipped) < 250


def test_reproducible_from_the_generator_and_names_checked():
    x = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    a = augment(x, ["crop", "flip"], generator=torch.Generator().manual_seed(3))
    b = augment(x, ["crop", "flip"], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown augmentation rotate"):
        check_augment(["crop", "rotate"])


@pytest.mark.parametrize("world", [2, 3])
def test_shards_of_a_global_batch_augment_as_the_whole_batch(world):
    """With ``rows``/``total`` (data-parallel shards), the shards augmented on their own and
    put back together equal the global batch augmented at once, and every shard drew as
    much from its generator as the whole batch."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (11, 3, 6, 6), dtype=torch.uint8)
    whole = augment(x, ("crop", "flip"), generator=torch.Generator().manual_seed(5))
    parts, states = [], []
    for rank in range(world):
        rows = torch.arange(11).tensor_split(world)[rank]
        g = torch.Generator().manual_seed(5)
        parts.append(augment(x[rows], ("crop", "flip"), generator=g, rows=rows, total=11))
        states.append(g.get_state())
    assert torch.equal(torch.cat(parts), whole)
    assert all(torch.equal(s, states[0]) for s in states)  # the ranks stay in step
    # without rows, sample i of every shard would get the same draw (the bug this fixes)
    naive = [augment(x[r], ("crop", "flip"), generator=torch.Generator().manual_seed(5))
             for r in torch.arange(11).tensor_split(world)]
    assert not torch.equal(torch.cat(naive), whole)
    with pytest.raises(ValueError, match="position of each"):
        random_flip(x[:3], generator=torch.Generator(), rows=torch.arange(2), total=11)
