"""DICOM series folders: each problem of a series is one line naming the folder; a good series
reads as the NIfTI file of the same voxels; the cache key follows every file of a series."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.encaps
import pytest
import torch
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLosslessSV1

from src.config import config_from_dict
from src.data.dicom import SeriesError, is_series_folder, series_slices, write_series
from src.data.loaders import item_hash, to_items
from src.data.phantom import FINDINGS, _save_nifti
from src.data.records import DataError, read_records
from src.data.transforms import build_preprocessing
from src.data.validate import check_images
from src.training.tasks import build_task

SHAPE = (10, 8, 6)  # x, y, z voxels
AFFINE = np.diag([1.5, 1.5, 4.0, 1.0])


def volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1500, size=SHAPE).astype(np.int16)


@pytest.fixture
def series(tmp_path) -> Path:
    folder = tmp_path / "scan"
    write_series(volume(), AFFINE, folder, patient_id="P1", suffix="")
    return folder


def edit(path: Path, **changes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)


def second_series(folder: Path) -> None:
    write_series(volume(1), AFFINE, folder, patient_id="P1", description="BONE", suffix=".dcm")


def localizer(folder: Path) -> None:
    edit(folder / "IM00003", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])


def missing_slice(folder: Path) -> None:
    (folder / "IM00003").unlink()


def mixed_sizes(folder: Path) -> None:
    edit(folder / "IM00002", Rows=4, Columns=4, PixelData=np.zeros((4, 4), np.uint16).tobytes())


def no_pixels(folder: Path) -> None:
    edit(folder / "IM00004", PixelData=None)


def compressed(folder: Path) -> None:
    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    ds = pydicom.dcmread(folder / "IM00002")
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not decoded here \xff\xd9"])
    ds.save_as(folder / "IM00002", enforce_file_format=True)


def nifti_only(folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()
    nib.save(nib.Nifti1Image(volume(), AFFINE), str(folder / "a.nii.gz"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (second_series, r"holds 2 series and none is chosen: .*'CHEST' \(6 slices\).*'BONE'"),
        (localizer, r"IM00003 is a localizer \(scout\) image"),
        (missing_slice, r"uneven slice gaps: 8.00 mm between .* \(about 1 slice\(s\) missing\)"),
        (mixed_sizes, r"mixed slice sizes 8x10 \(5 slices\), 4x4 \(1 slices\), e.g. IM00002"),
        (no_pixels, r"IM00004 has no pixel data"),
        (compressed, r"compressed as JPEG Lossless.*no installed decoder.*pylibjpeg-libjpeg"),
        (nifti_only, r"holds no DICOM files; a folder of NIfTI files is not one scan"),
    ],
)
def test_each_series_problem_is_one_line_naming_the_folder(series, damage, message):
    damage(series)
    with pytest.raises(SeriesError, match=message) as err:
        series_slices(series)
    assert str(err.value).startswith(f"DICOM series {series}: ")
    assert "\n" not in str(err.value)


def test_slices_are_ordered_by_position_not_by_number_or_name(series):
    slices, names = series_slices(series)
    z = [float(ds.ImagePositionPatient[2]) for ds in slices]
    assert z == sorted(z) and len(z) == SHAPE[2]
    assert [Path(n).name for n in names] == [f"IM{i:05d}" for i in range(6, 0, -1)]


def test_gantry_tilt_is_a_warning(series):
    for i, path in enumerate(sorted(series.iterdir())):
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        edit(path, ImagePositionPatient=[x, y + 0.5 * (6 - i), z])  # 7 degrees over 4 mm slices
    with pytest.warns(UserWarning, match=r"gantry tilt of 7\.1 degrees"):
        series_slices(series)


def test_the_chosen_series_is_read_and_a_study_folder_needs_a_choice(series, tmp_path):
    second_series(series)
    bone = pydicom.dcmread(next(series.glob("*.dcm"))).SeriesInstanceUID
    slices, _ = series_slices(series, bone)
    assert {ds.SeriesDescription for ds in slices} == {"BONE"}
    csv = tmp_path / "labels.csv"
    header = "image,series," + ",".join(FINDINGS)
    csv.write_text(f"{header}\nscan,{bone},{','.join(['0'] * 6)}\n")
    raw = {"csv": str(csv), "image_root": str(tmp_path), "label_columns": FINDINGS}
    raw |= {"cache_dir": str(tmp_path / "cache"), "spatial_size": [8, 8, 4]}
    cfg = config_from_dict({"data": raw | {"series_uid_column": "series"}})
    task = build_task(cfg)
    records = read_records(cfg, task)
    assert records[0]["series_uid"] == bone
    assert check_images(records, cfg, progress=False) == records
    image = build_preprocessing(cfg)(to_items(records)[0])["image"]
    assert image.shape == (1, 8, 8, 4)
    cfg.data.series_uid_column = ""  # the same folder without the choice: its CSV row named
    with pytest.raises(DataError, match=r"labels.csv row 2: image .*scan: holds 2 series"):
        check_images(read_records(cfg, task), cfg, progress=False)


def test_cache_key_changes_when_any_file_of_the_series_changes(series):
    assert is_series_folder(series)
    item = to_items([{"image": str(series), "label": np.zeros(2), "id": "s"}])[0]
    before = item_hash(item)
    path = series / "IM00004"
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert item_hash(item) != before
    assert item_hash(item | {"series_uid": "1.2.3"}) != item_hash(item)


@pytest.mark.parametrize(("lps", "intercept"), [(False, False), (True, True)])
def test_series_reads_as_the_nifti_file_of_the_same_voxels(tmp_path, lps, intercept):
    hu = volume()
    _save_nifti(hu, AFFINE, tmp_path / "a.nii.gz", lps=lps, intercept=intercept)
    write_series(hu, AFFINE, tmp_path / "a", patient_id="P1", intercept=intercept)
    raw = {"csv": "x", "image_root": "x", "label_columns": ["a"], "spacing": [2.0, 2.0, 3.0]}
    cfg = config_from_dict({"data": raw | {"spatial_size": [8, 8, 8]}})
    pre = build_preprocessing(cfg)
    from_nifti = pre({"image": str(tmp_path / "a.nii.gz")})["image"]
    from_dicom = pre({"image": str(tmp_path / "a")})["image"]
    torch.testing.assert_close(from_dicom, from_nifti, atol=1e-5, rtol=0)
