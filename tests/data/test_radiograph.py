"""2D radiograph loading: any PNG/JPEG/DICOM becomes one grey channel, scaled by bit depth, at
the configured size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from src.config import config_from_dict
from src.data.radiograph import bit_depth_maximum, grey_channel
from src.data.transforms import build_preprocessing, preprocessing_key

RAMP = (np.arange(20 * 30).reshape(20, 30) % 256).astype(np.uint8)  # rows, columns


def cfg2d(**data):
    base = {"csv": "x", "image_root": ".", "label_columns": ["a"], "spatial_size": [16, 16]}
    return config_from_dict({"data": base | data})


def write_dicom(path, pixels: np.ndarray, bits_stored: int) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # computed radiography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    assert pydicom.__version__
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same picture as 8-bit grey, 16-bit grey, RGB, RGBA, grey+alpha PNG, JPEG, DICOM."""
    d = tmp_path_factory.mktemp("radiographs")
    Image.fromarray(RAMP).save(d / "g8.png")
    Image.fromarray(RAMP.astype(np.uint16) * 257).save(d / "g16.png")  # same in 16 bits
    Image.fromarray(np.stack([RAMP] * 3, -1)).save(d / "rgb.png")
    Image.fromarray(np.stack([RAMP] * 4, -1)).save(d / "rgba.png")
    Image.fromarray(np.stack([RAMP, RAMP], -1), mode="LA").save(d / "la.png")
    Image.fromarray(RAMP).save(d / "g.jpg", quality=100)
    write_dicom(d / "x.dcm", RAMP.astype(np.uint16) * 16, bits_stored=12)  # same in 12 bits
    return d


def test_rgb_becomes_luma_like_pil():
    rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)
    grey = grey_channel(torch.from_numpy(rgb).permute(2, 0, 1))
    assert grey.shape == (1, 9, 7)
    np.testing.assert_allclose(grey[0].numpy(), ref, atol=1.0)  # PIL rounds to integers


@pytest.mark.parametrize(
    ("dtype", "top", "expected"),
    [
        (torch.uint8, 200, 255),
        (torch.int32, 255, 255),
        (torch.int32, 4000, 4095),
        (torch.int32, 1023, 1023),
        (torch.int32, 51000, 65535),
    ],
)
def test_bit_depth_maximum(dtype, top, expected):
    assert bit_depth_maximum(torch.tensor([0, top], dtype=dtype)) == expected


@pytest.mark.parametrize(
    "name", ["g8.png", "g16.png", "rgb.png", "rgba.png", "la.png", "g.jpg", "x.dcm"]
)
def test_every_format_gives_the_same_grey_image(files, name):
    pre = build_preprocessing(cfg2d(intensity_mode="bit_depth", resize_mode="resize"))
    ref = pre({"image": str(files / "g8.png")})["image"]
    out = pre({"image": str(files / name)})["image"]
    assert out.shape == (1, 16, 16) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    torch.testing.assert_close(out, ref, atol=0.01, rtol=0)


def test_fit_keeps_the_aspect_ratio_and_pads(files):
    out = build_preprocessing(cfg2d(intensity_mode="bit_depth", resize_mode="fit"))(
        {"image": str(files / "g8.png")}
    )["image"]
    # 20 x 30 (MONAI's PIL reader gives width first: 30 x 20) -> 16 x 11, padded to 16 x 16
    assert out.shape == (1, 16, 16)
    filled = (out[0] != 0).any(dim=0)
    assert int(filled.sum()) in (10, 11)


@pytest.mark.parametrize("mode", ["bit_depth", "percentile"])
def test_intensity_mode_changes_the_cache_key(mode):
    assert preprocessing_key(cfg2d(intensity_mode=mode)) != preprocessing_key(cfg2d())


def test_2d_spacing_is_refused():
    from src.config import ConfigError

    with pytest.raises(ConfigError, match=r"data\.spacing: 2D images"):
        cfg2d(spacing=[1.0, 1.0])
