"""CT as it arrives from a scanner: a folder of DICOM slices (one series) read as one volume.

``series_slices`` finds and validates the series of a folder (the one ``series_uid`` names when
the folder holds several) and returns its slices ordered by position along the slice normal
(ImagePositionPatient projected on the normal of ImageOrientationPatient). Each problem is one
``SeriesError`` naming the folder and what to do: several series and none chosen (listing UIDs
and descriptions), a localizer (scout), a single slice, slices of other orientations, uneven
slice gaps (missing or duplicated slices, with their positions), mixed slice sizes, a file
without pixel data, a compressed transfer syntax no installed decoder reads (naming the package
that does). A gantry tilt is a warning.

``DicomSeriesReader`` is MONAI's ``PydicomReader`` fed with those slices (MONAI's other series
reader, ``ITKReader``, needs ``itk``, which this project does not install). MONAI 1.6's
``PydicomReader`` reads a folder itself, but stacks slices by InstanceNumber (not position),
reads every file of the folder as one series and only warns on mixed sizes; the reading proper
(rescale slope and intercept to HU, the affine from ImageOrientationPatient /
ImagePositionPatient, LPS to RAS) is MONAI's.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.config import KeysCollection
from monai.data import PydicomReader
from monai.transforms import LoadImage, MapTransform
from monai.utils import ensure_tuple
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder

# With pydicom installed, MONAI's default readers include a GPU DICOM decoder that, without
# nvImageCodec, logs and warns on every LoadImage (``LoadImageOrSeriesd`` builds one); the
# plain pydicom reader is used either way.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin")

GAP_TOLERANCE = 0.2  # relative deviation of a slice gap from the median gap that is an error
TILT_WARNING_DEG = 0.5


class SeriesError(ValueError):
    """A DICOM folder that is not one readable CT series: the folder and what to do."""

    def __init__(self, folder: str | Path, problem: str):
        super().__init__(f"DICOM series {folder}: {problem}")
        self.problem = problem


def dicom_files(folder: str | Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (any extension or none), sorted by name."""
    entries = (e for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))
    return sorted(Path(e.path) for e in entries if pydicom.misc.is_dicom(e.path))


def is_series_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding DICOM files (one scan), not a folder of scans."""
    if not os.path.isdir(path):
        return False
    for entry in os.scandir(path):
        if entry.is_file() and not entry.name.startswith("."):
            return bool(pydicom.misc.is_dicom(entry.path))
    return False


def _describe(uid: str, slices: list[Dataset]) -> str:
    first = slices[0]
    desc = str(getattr(first, "SeriesDescription", "") or "no description")
    scout = ", localizer" if _is_localizer(first) else ""
    n = len(slices)
    return f"{uid} '{desc}' ({n} slice{'s' if n != 1 else ''}{scout})"


def _is_localizer(ds: Dataset) -> bool:
    return "LOCALIZER" in [str(v).upper() for v in ensure_tuple(getattr(ds, "ImageType", []))]


def _choose_series(folder: Path, by_uid: dict[str, list[Dataset]], series_uid: str) -> str:
    listing = "; ".join(_describe(uid, s) for uid, s in by_uid.items())
    if series_uid:
        if series_uid not in by_uid:
            raise SeriesError(folder, f"holds no series {series_uid}; it holds: {listing}")
        return series_uid
    if len(by_uid) > 1:
        raise SeriesError(
            folder,
            f"holds {len(by_uid)} series and none is chosen: {listing}; name one in the "
            "CSV column data.series_uid_column, or move each series into its own folder",
        )
    return next(iter(by_uid))


def _normal(ds: Dataset) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def _check_pixels(folder: Path, slices: list[Dataset], names: list[str]) -> None:
    no_pixels = [n for ds, n in zip(slices, names, strict=True) if "PixelData" not in ds]
    if no_pixels:
        raise SeriesError(
            folder,
            f"{no_pixels[0]} has no pixel data ({len(no_pixels)} such files; a report or other "
            "non-image object); remove it from the series folder",
        )
    syntaxes = {ds.file_meta.get("TransferSyntaxUID") for ds in slices} - {None}
    for uid in sorted(syntaxes):
        if uid.is_compressed and not get_decoder(uid).is_available:
            needs = "; or ".join(get_decoder(uid).missing_dependencies)
            raise SeriesError(
                folder,
                f"slices are compressed as {uid.name} ({uid}), which no installed decoder "
                f"reads; install a plugin that does ({needs})",
            )
    sizes = Counter((int(ds.Rows), int(ds.Columns)) for ds in slices)
    if len(sizes) > 1:
        (common, _), *_ = sizes.most_common()
        odd = next(
            n for ds, n in zip(slices, names, strict=True) if (ds.Rows, ds.Columns) != common
        )
        shown = ", ".join(f"{r}x{c} ({k} slices)" for (r, c), k in sizes.most_common())
        raise SeriesError(folder, f"mixed slice sizes {shown}, e.g. {odd}; export one series")


def _check_geometry(folder: Path, slices: list[Dataset], names: list[str]) -> np.ndarray:
    """Position of each slice along the normal (mm); refuses scouts, other orientations and
    a single slice."""
    missing = [n for ds, n in zip(slices, names, strict=True) if "ImagePositionPatient" not in ds]
    missing += [
        n for ds, n in zip(slices, names, strict=True) if "ImageOrientationPatient" not in ds
    ]
    if missing:
        raise SeriesError(
            folder,
            f"{missing[0]} lacks ImagePositionPatient / ImageOrientationPatient (the slice "
            "geometry); export the series with its geometry",
        )
    iop0 = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
    for ds, name in zip(slices, names, strict=True):
        if _is_localizer(ds):
            raise SeriesError(
                folder,
                f"{name} is a localizer (scout) image, not a slice of a CT volume; choose the "
                "axial series (data.series_uid_column) or remove the scout from the folder",
            )
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), iop0, atol=1e-3):
            raise SeriesError(
                folder,
                f"{name} has another orientation than {names[0]} (a scout or another series); "
                "remove it from the folder",
            )
    if len(slices) < 2:
        raise SeriesError(folder, f"has 1 slice ({names[0]}); a CT volume needs a series")
    normal = _normal(slices[0])
    return np.array([float(np.dot(normal, ds.ImagePositionPatient)) for ds in slices])


def _check_gaps(folder: Path, pos: np.ndarray, names: list[str]) -> None:
    """``pos`` and ``names`` are in slice order."""
    gaps = np.diff(pos)
    step = float(np.median(gaps))
    bad = np.flatnonzero((gaps <= 1e-3) | (np.abs(gaps - step) > GAP_TOLERANCE * step))
    if not len(bad):
        return
    i = int(bad[0])
    gap = float(gaps[i])
    if gap < step:
        why = "a slice is duplicated or two series are mixed"
    else:
        why = f"about {round(gap / step) - 1} slice(s) missing"
    more = f" ({len(bad) - 1} more uneven gaps)" if len(bad) > 1 else ""
    raise SeriesError(
        folder,
        f"uneven slice gaps: {gap:.2f} mm between {names[i]} at {pos[i]:.2f} mm and "
        f"{names[i + 1]} at {pos[i + 1]:.2f} mm where the others are {step:.2f} mm ({why})"
        f"{more}; export the whole series again",
    )


def _warn_tilt(folder: Path, slices: list[Dataset]) -> None:
    first, last = (np.asarray(s.ImagePositionPatient, dtype=float) for s in (slices[0], slices[-1]))
    stack = (last - first) / max(np.linalg.norm(last - first), 1e-9)
    angle = float(np.degrees(np.arccos(min(1.0, abs(float(np.dot(stack, _normal(slices[0]))))))))
    if angle > TILT_WARNING_DEG:
        warnings.warn(
            f"DICOM series {folder}: gantry tilt of {angle:.1f} degrees (slices are not stacked "
            "along their normal); the volume is read sheared, as the slice positions say",
            stacklevel=3,
        )


def series_slices(
    folder: str | Path, series_uid: str = "", pixels: bool = True
) -> tuple[list[Dataset], list[str]]:
    """(slices, their file paths) of the chosen series of ``folder``, in position order.

    ``pixels=False`` reads headers only (the pixel data is skipped, not loaded), for checks.
    Raises ``SeriesError`` for each problem listed in the module docstring.
    """
    folder = Path(folder)
    files = dicom_files(folder)
    if not files:
        raise SeriesError(
            folder,
            "holds no DICOM files; a folder of NIfTI files is not one scan: give each file a row",
        )
    read = {"defer_size": 1024} if not pixels else {}
    by_uid: dict[str, list[Dataset]] = {}
    paths: dict[str, list[str]] = {}
    for f in files:
        ds = pydicom.dcmread(f, **read)
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "no SeriesInstanceUID")
        by_uid.setdefault(uid, []).append(ds)
        paths.setdefault(uid, []).append(str(f))
    uid = _choose_series(folder, by_uid, series_uid)
    slices, names = by_uid[uid], paths[uid]
    short = [Path(n).name for n in names]
    _check_pixels(folder, slices, short)
    pos = _check_geometry(folder, slices, short)
    order = np.argsort(pos, kind="stable")
    slices, names = [slices[i] for i in order], [names[i] for i in order]
    _check_gaps(folder, pos[order], [short[i] for i in order])
    _warn_tilt(folder, slices)
    return slices, names


class DicomSeriesReader(PydicomReader):
    """MONAI's ``PydicomReader`` for one series folder, its slices chosen, checked and
    ordered by ``series_slices``; HU (rescale slope / intercept) and the RAS affine as MONAI
    reads them."""

    def __init__(self, series_uid: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        return all(is_series_folder(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> list[Dataset]:
        (folder,) = ensure_tuple(data)
        slices, names = series_slices(folder, self.series_uid)
        for rank, ds in enumerate(slices):  # MONAI stacks by InstanceNumber: make it the order
            ds.InstanceNumber = rank + 1
        self.has_series = True
        self.filenames = [names]
        return slices


def series_version(folder: str | Path) -> list[list[Any]]:
    """(name, size, mtime) of every file of the folder: changes when any file changes."""
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    return [[e.name, e.stat().st_size, e.stat().st_mtime_ns] for e in entries if e.is_file()]


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    return f"{value:.6f}"[:16]


def write_series(
    hu: np.ndarray,
    affine: np.ndarray,
    folder: str | Path,
    *,
    patient_id: str,
    intercept: bool = True,
    suffix: str = ".dcm",
    description: str = "CHEST",
) -> list[Path]:
    """Write a HU volume (x, y, z voxels on a RAS ``affine``) as an axial CT series of one
    file per z slice, as a scanner exports it: LPS patient coordinates, int16 HU or, with
    ``intercept``, unsigned raw values with a rescale intercept of -1024. Deterministic UIDs
    (derived from ``patient_id`` and ``description``). Returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=float)
    if lps[0, 0] < 0:  # store rows left-going and columns posterior-going, as scanners do
        hu = hu[::-1]
        lps[:3, 3] += lps[:3, 0] * (hu.shape[0] - 1)
        lps[:3, 0] *= -1
    if lps[1, 1] < 0:
        hu = hu[:, ::-1]
        lps[:3, 3] += lps[:3, 1] * (hu.shape[1] - 1)
        lps[:3, 1] *= -1
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    key = [patient_id, description]
    study = pydicom.uid.generate_uid(entropy_srcs=[*key, "study"])
    series = pydicom.uid.generate_uid(entropy_srcs=[*key, "series"])
    frame = pydicom.uid.generate_uid(entropy_srcs=[*key, "frame"])
    nz = hu.shape[2]
    written = []
    for k in range(nz):
        sop = pydicom.uid.generate_uid(entropy_srcs=[*key, str(k)])
        meta = pydicom.dataset.FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = pydicom.uid.CTImageStorage, sop
        ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientID, ds.SeriesDescription = patient_id, description
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.InstanceNumber = nz - k  # numbered head to feet; the position gives the order
        ds.ImagePositionPatient = [_ds(v) for v in lps[:3, :3] @ [0, 0, k] + lps[:3, 3]]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # between rows, between columns
        ds.SliceThickness = _ds(spacing[2])
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024" if intercept else "0"
        plane = np.ascontiguousarray(hu[:, :, k].T)  # (rows, columns) = (y, x)
        if intercept:
            ds.PixelRepresentation = 0
            ds.PixelData = (plane.astype(np.int32) + 1024).astype(np.uint16).tobytes()
        else:
            ds.PixelRepresentation = 1
            ds.PixelData = plane.astype(np.int16).tobytes()
        path = folder / f"IM{nz - k:05d}{suffix}"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


class LoadImageOrSeriesd(MapTransform):
    """MONAI's ``LoadImage`` of each key, with a DICOM series folder read by
    ``DicomSeriesReader`` (the series the item's ``series_uid`` names, else the folder's only
    one; a reader per item, as the series differ)."""

    def __init__(self, keys: KeysCollection, **load_options: Any):
        super().__init__(keys)
        self.load = LoadImage(**load_options)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            series = os.path.isdir(d[key])
            reader = DicomSeriesReader(str(d.get("series_uid", ""))) if series else None
            d[key] = self.load(d[key], reader)
        return d
