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
