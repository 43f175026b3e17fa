"""2D radiograph preprocessing steps MONAI lacks: one grey channel, and bit-depth scaling.

PNG/JPEG come through MONAI's PIL reader and DICOM through its pydicom reader, as 1 (grey),
2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels of uint8, or int32 for 16-bit PNG and DICOM.
``ScaleBitDepthd`` maps the stored range (8, 10, 12, 14 or 16 bits) to [0, 1], so a 12-bit
DICOM and an 8-bit PNG of the same exposure come out alike; ``GreyChanneld`` then makes one
grey channel of whatever the file held.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

# ITU-R BT.601 luma weights, the ones PIL's convert("L") uses
_LUMA = (0.299, 0.587, 0.114)
_BIT_DEPTHS = (8, 10, 12, 14, 16)


def grey_channel(image: torch.Tensor, source: str = "image") -> torch.Tensor:
    """(C, H, W[, 1...]) -> (1, H, W) float32: luma of RGB(A), first channel of grey+alpha."""
    x = torch.as_tensor(image)
    while x.ndim > 3 and x.shape[-1] == 1:  # a single-frame DICOM read as (1, H, W, 1)
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(
            f"{source}: expected a 2D image, got shape {tuple(x.shape[1:])}; "
            "2D training (data.spatial_size of length 2) reads single-frame images"
        )
    x = x.float()
    if x.shape[0] >= 3:
        w = torch.tensor(_LUMA, dtype=x.dtype).reshape(3, 1, 1)
        return (x[:3] * w).sum(0, keepdim=True)
    return x[:1]


def bit_depth_maximum(image: torch.Tensor) -> float:
    """The largest value the image's storage can hold: 255 for uint8, else the smallest of
    2^b - 1 (b = 10, 12, 14, 16) that covers the image's maximum."""
    if image.dtype == torch.uint8:
        return 255.0
    top = float(image.max()) if image.numel() else 0.0
    for bits in _BIT_DEPTHS:
        if top <= 2**bits - 1:
            return float(2**bits - 1)
    return top


class GreyChanneld(MapTransform):
    """Dictionary transform: one grey float32 channel whatever the file held."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            source = str(getattr(image, "meta", {}).get("filename_or_obj", key))
            d[key] = _like(image, grey_channel(image, source))
        return d


class ScaleBitDepthd(MapTransform):
    """Dictionary transform: stored values / ``bit_depth_maximum`` -> [0, 1], float32.
    Runs before ``GreyChanneld``, while the stored dtype (uint8 or wider) is still known."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            x = torch.as_tensor(image)
            d[key] = _like(image, (x.float() / bit_depth_maximum(x)).clamp(0.0, 1.0))
        return d


def _like(original: Any, values: torch.Tensor) -> Any:
    """``values`` as a MetaTensor carrying ``original``'s metadata (affine), when it had any."""
    if hasattr(original, "meta"):
        return type(original)(values, meta=original.meta)
    return values
