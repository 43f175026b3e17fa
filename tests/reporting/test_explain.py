"""Thumbnails of the W&B predictions table: the image's orthogonal mid-slices (3D) or the image
(2D), small enough for a 1,000-scan table; with a Grad-CAM map, slices through its peak."""

from __future__ import annotations

import numpy as np
import pytest

from src.reporting.explain import THUMBNAIL_SIDE, thumbnail


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((24, 24, 16), (24, 24 + 1 + 24 + 1 + 24)),  # axial 24x24, coronal and sagittal 16x24
        ((300, 200), (200 * THUMBNAIL_SIDE // 300, THUMBNAIL_SIDE)),  # 2D (x, y), shrunk
        ((160, 160, 160), (THUMBNAIL_SIDE, 3 * THUMBNAIL_SIDE + 2)),  # each slice shrunk
    ],
)
def test_thumbnail_shape(shape, expected):
    image = np.linspace(0, 1, np.prod(shape), dtype=np.float32).reshape(shape)
    pixels = thumbnail(image)
    assert pixels.dtype == np.uint8 and pixels.shape == expected


def test_the_overlay_cuts_through_the_maps_peak():
    image = np.zeros((20, 20, 20), np.float32)
    heat = np.zeros_like(image)
    heat[3, 15, 6] = 1.0  # away from the middle: the mid-slices would miss it
    pixels = thumbnail(image, heat)
    assert pixels.shape == (20, 62, 3)
    red = pixels[..., 0].astype(int) - pixels[..., 2]
    assert (red > 0).sum() == 3  # the peak's voxel (jet: red, else blue) in each of the slices
