"""Built-in phantom chest CT: real NIfTI volumes and a labels CSV, deterministic from a seed.

Each scan is an int16 Hounsfield-like volume of a thorax (body, lungs, heart, aorta, spine,
lung vessels) with anisotropic spacing, a varying field of view and matrix size, and one of two
storage orientations (RAS, or LPS as DICOM-derived files often are). Six findings, named as in
CT-RATE, have local signatures a 3D network can learn:

=================================  ==========  ==============================================
finding                            prevalence  signature
=================================  ==========  ==============================================
Lung nodule                        ~0.30       1-3 soft-tissue spheres (6-11 mm) in a lung
Pleural effusion                   ~0.15       fluid layer at the dorsal lung base
Cardiomegaly                       ~0.12       heart 1.3-1.45x its normal size
Consolidation                      ~0.20       a dense irregular patch inside a lung
Emphysema                          ~0.10       clusters of near-air bullae in the upper lungs
Arterial wall calcification        ~0.38       bright plaques on the aortic wall / heart
=================================  ==========  ==============================================

Global nuisances (body and lung size, lung density, noise, field of view, bone size, vessel
count) vary far more than any finding moves whole-volume intensity statistics, so the findings
are not separable from histograms alone (see ``benchmarks/intensity_baseline.py``).

Patients have 1-3 scans; chronic findings (emphysema, calcification, cardiomegaly, nodules)
persist across a patient's scans, acute ones (effusion, consolidation) are drawn per scan.
``regions.json`` records where every finding was planted, in world (RAS, mm) coordinates.
``--format dicom`` writes each scan as a folder of axial DICOM slices instead (the same voxels;
``src.data.dicom.write_series``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from src.data.dicom import write_series
from src.files import atomic_folder, write_csv

FINDINGS = [
    "Lung nodule",
    "Pleural effusion",
    "Cardiomegaly",
    "Consolidation",
    "Emphysema",
    "Arterial wall calcification",
]
PREVALENCE = {
    "Lung nodule": 0.30,
    "Pleural effusion": 0.15,
    "Cardiomegaly": 0.12,
    "Consolidation": 0.20,
    "Emphysema": 0.10,
    "Arterial wall calcification": 0.38,
}
CHRONIC = {"Lung nodule", "Cardiomegaly", "Emphysema", "Arterial wall calcification"}
CENTERS = ["site_a", "site_b"]


@dataclass
class Anatomy:
    """A patient's body plan in world millimetres (RAS: +x left-to-right, +y anterior, +z up)."""

    body: tuple[float, float]
    lung_centers: list[tuple[float, float, float]]
    lung_radii: tuple[float, float, float]
    lung_hu: float
    heart_scale: float
    spine_radius: float
    findings: dict[str, bool]
    nodules: list[tuple[tuple[float, float, float], float]] = field(default_factory=list)
    calcs: list[tuple[tuple[float, float, float], tuple, float]] = field(default_factory=list)
    bullae: list[tuple[tuple[float, float, float], float]] = field(default_factory=list)


class Canvas:
    """A volume on a world grid; shapes are painted on their bounding box only (fast)."""

    def __init__(self, shape: tuple[int, int, int], spacing: np.ndarray, origin: np.ndarray):
        self.vol = np.full(shape, -1000.0, dtype=np.float32)
        self.spacing = spacing
        self.origin = origin  # world position of voxel (0, 0, 0)

    def _box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[tuple[slice, ...], list[np.ndarray]]:
        i0 = np.clip(np.floor((lo - self.origin) / self.spacing).astype(int), 0, self.vol.shape)
        i1 = np.clip(np.ceil((hi - self.origin) / self.spacing).astype(int) + 1, 0, self.vol.shape)
        sl = tuple(slice(a, b) for a, b in zip(i0, i1, strict=True))
        axes = [
            self.origin[d] + self.spacing[d] * np.arange(i0[d], i1[d], dtype=np.float32)
            for d in range(3)
        ]
        return sl, axes

    def ellipsoid_mask(self, center, radii) -> tuple[tuple[slice, ...], np.ndarray]:
        c, r = np.asarray(center, np.float32), np.asarray(radii, np.float32)
        sl, (x, y, z) = self._box(c - r, c + r)
        d = (
            ((x[:, None, None] - c[0]) / r[0]) ** 2
            + ((y[None, :, None] - c[1]) / r[1]) ** 2
            + ((z[None, None, :] - c[2]) / r[2]) ** 2
        )
        return sl, d <= 1.0

    def paint(self, center, radii, value: float, within: np.ndarray | None = None) -> None:
        sl, mask = self.ellipsoid_mask(center, radii)
        if within is not None:
            mask &= within[sl]
        self.vol[sl][mask] = value

    def world_grid(self) -> list[np.ndarray]:
        return [
            self.origin[d] + self.spacing[d] * np.arange(self.vol.shape[d], dtype=np.float32)
            for d in range(3)
        ]


def _sample_anatomy(rng: np.random.Generator) -> Anatomy:
    a = rng.uniform(128, 165)
    b = a * rng.uniform(0.62, 0.75)
    lung_r = (a * rng.uniform(0.30, 0.36), b * rng.uniform(0.62, 0.74), rng.uniform(85, 110))
    lx = a * rng.uniform(0.42, 0.48)
    lungs = [(-lx, -0.08 * b, 10.0), (lx, -0.08 * b, 10.0)]
    findings = {f: bool(rng.random() < PREVALENCE[f]) for f in FINDINGS}
    heart = rng.uniform(1.30, 1.45) if findings["Cardiomegaly"] else rng.normal(1.0, 0.05)
    anat = Anatomy(
        body=(a, b),
        lung_centers=lungs,
        lung_radii=lung_r,
        lung_hu=rng.uniform(-870, -770),
        heart_scale=float(np.clip(heart, 0.88, 1.12) if not findings["Cardiomegaly"] else heart),
        spine_radius=rng.uniform(12, 20),
        findings=findings,
    )
    if findings["Lung nodule"]:
        for _ in range(rng.integers(1, 4)):
            anat.nodules.append((_point_in_lung(rng, anat, 0.7), rng.uniform(6.0, 11.0)))
    if findings["Arterial wall calcification"]:
        for _ in range(rng.integers(6, 13)):  # plaques on the aortic wall and the heart surface
            t = rng.uniform(0, 2 * np.pi)
            if rng.random() < 0.6:
                pos = (-0.10 * a + 13 * np.cos(t), -0.45 * b + 13 * np.sin(t), rng.uniform(-80, 90))
            else:
                hx, hy = anat.heart_scale * 0.30 * a, anat.heart_scale * 0.34 * b
                pos = (-0.12 * a + hx * np.cos(t), 0.30 * b + hy * np.sin(t), -25.0)
            r = rng.uniform(4.0, 6.0)
            anat.calcs.append((pos, (r, r, rng.uniform(10.0, 20.0)), rng.uniform(700, 1300)))
    if findings["Emphysema"]:
        for _ in range(rng.integers(35, 70)):
            p = _point_in_lung(rng, anat, 0.85)
            p = (p[0], p[1], abs(p[2] - 10.0) + 10.0)  # upper lobes
            anat.bullae.append((p, rng.uniform(4.0, 9.0)))
    return anat


def _point_in_lung(rng: np.random.Generator, anat: Anatomy, depth: float):
    c = anat.lung_centers[rng.integers(0, 2)]
    while True:
        u = rng.uniform(-1, 1, size=3)
        if (u**2).sum() <= 1:
            break
    return tuple(float(c[d] + depth * u[d] * anat.lung_radii[d]) for d in range(3))


def _render_scan(
    anat: Anatomy,
    rng: np.random.Generator,
    findings: dict[str, bool],
    matrix: tuple[int, int, int] | None = None,
):
    """Render one scan of a patient; returns (HU volume, affine (RAS), regions).

    ``matrix`` fixes the voxel grid (the spacing follows from the field of view); by default
    the spacing is drawn and the matrix follows.
    """
    a, b = anat.body
    sxy, sz = rng.uniform(2.3, 3.1), rng.uniform(3.0, 5.0)
    fov_xy = 2 * a + rng.uniform(20, 70)
    fov_z = rng.uniform(260, 320)
    shape = (int(fov_xy / sxy), int(fov_xy / sxy), int(fov_z / sz))
    if matrix is not None:  # same random draws as the default, so the anatomy is unchanged
        shape = tuple(int(m) for m in matrix)
        sxy, sz = fov_xy / shape[0], fov_z / shape[2]
    spacing = np.array([sxy, sxy, sz], np.float32)
    shift = rng.normal(0, 8, size=3).astype(np.float32)
    origin = -spacing * (np.array(shape) - 1) / 2 + shift
    cv = Canvas(shape, spacing, origin)
    x, y, z = cv.world_grid()

    body2d = ((x[:, None] / a) ** 2 + (y[None, :] / b) ** 2) <= 1.0
    body = np.broadcast_to(body2d[:, :, None], shape)
    cv.vol[body] = rng.uniform(20, 50)
    fat = ((x[:, None] / (a - 12)) ** 2 + (y[None, :] / (b - 12)) ** 2) > 1.0
    cv.vol[body2d & fat] = rng.uniform(-110, -80)
    lung = np.zeros(shape, bool)
    for c in anat.lung_centers:
        sl, m = cv.ellipsoid_mask(c, anat.lung_radii)
        lung[sl] |= m
    cv.vol[lung] = anat.lung_hu
    # Vessels: small soft-tissue dots everywhere in the lungs (what nodules must be told from).
    for _ in range(rng.integers(20, 70)):
        cv.paint(_point_in_lung(rng, anat, 0.9), [rng.uniform(1.5, 3.0)] * 3, 30.0, lung)
    regions: dict[str, list[dict]] = {}

    def box(center, radii):
        c, r = np.asarray(center), np.asarray(radii)
        return {"bbox_mm": [(c - r).round(1).tolist(), (c + r).round(1).tolist()]}

    heart_c = (-0.12 * a, 0.30 * b, -25.0)
    heart_r = tuple(anat.heart_scale * v for v in (0.30 * a, 0.34 * b, 55.0))
    cv.paint(heart_c, heart_r, 40.0, body)
    if findings["Cardiomegaly"]:
        regions["Cardiomegaly"] = [box(heart_c, heart_r)]
    aorta = ((x[:, None] + 0.10 * a) ** 2 + (y[None, :] + 0.45 * b) ** 2) <= 12.0**2
    cv.vol[aorta] = 40.0
    spine = ((x[:, None]) ** 2 + (y[None, :] + 0.82 * b) ** 2) <= anat.spine_radius**2
    cv.vol[spine] = rng.uniform(500, 800)
    marrow = ((x[:, None]) ** 2 + (y[None, :] + 0.82 * b) ** 2) <= (0.6 * anat.spine_radius) ** 2
    cv.vol[marrow] = 250.0
    for _ in range(rng.integers(4, 10)):  # ribs seen end-on: bright specks near the body wall
        t = rng.uniform(0, 2 * np.pi)
        p = ((a - 18) * np.cos(t), (b - 18) * np.sin(t), rng.uniform(-100, 100))
        cv.paint(p, (6, 6, rng.uniform(15, 40)), rng.uniform(400, 800), body)

    for c, r in anat.nodules:
        cv.paint(c, (r, r, r), rng.uniform(10, 60), lung)
    if anat.nodules:
        regions["Lung nodule"] = [box(c, (r, r, r)) for c, r in anat.nodules]
    for c, r, hu in anat.calcs:
        cv.paint(c, r, hu)
    if anat.calcs:
        regions["Arterial wall calcification"] = [box(c, r) for c, r, _ in anat.calcs]
    for c, r in anat.bullae:
        cv.paint(c, (r, r, r), -990.0, lung)
    if anat.bullae:
        pts = np.array([c for c, _ in anat.bullae])
        regions["Emphysema"] = [
            {"bbox_mm": [pts.min(0).round(1).tolist(), pts.max(0).round(1).tolist()]}
        ]
    if findings["Consolidation"]:
        c0 = np.array(_point_in_lung(rng, anat, 0.55))
        hu = rng.uniform(-150, 20)
        blobs = []
        for _ in range(rng.integers(3, 6)):
            c = c0 + rng.normal(0, 9, size=3)
            r = rng.uniform(10, 18, size=3)
            cv.paint(c, r, hu, lung)
            blobs.append((c, r))
        lo = np.min([c - r for c, r in blobs], 0)
        hi = np.max([c + r for c, r in blobs], 0)
        regions["Consolidation"] = [{"bbox_mm": [lo.round(1).tolist(), hi.round(1).tolist()]}]
    if findings["Pleural effusion"]:
        sides = [0, 1] if rng.random() < 0.5 else [int(rng.integers(0, 2))]
        boxes = []
        for s in sides:
            c, r = anat.lung_centers[s], anat.lung_radii
            h = rng.uniform(0.30, 0.50) * 2 * r[1]
            level = c[1] - r[1] + h
            zmax = c[2] - rng.uniform(0.0, 0.3) * r[2]
            sl, m = cv.ellipsoid_mask(c, r)
            yy = y[sl[1]][None, :, None]
            zz = z[sl[2]][None, None, :]
            cv.vol[sl][m & (yy < level) & (zz < zmax)] = rng.uniform(0, 20)
            lo = [c[0] - r[0], c[1] - r[1], c[2] - r[2]]
            boxes.append({"bbox_mm": [np.round(lo, 1).tolist(), [c[0] + r[0], level, zmax]]})
        regions["Pleural effusion"] = boxes

    cv.vol += rng.normal(0, rng.uniform(10, 35), size=shape).astype(np.float32)
    hu = np.clip(np.rint(cv.vol), -1024, 3071).astype(np.int16)
    affine = np.diag([*spacing.tolist(), 1.0])
    affine[:3, 3] = origin
    return hu, affine, regions


def _save_nifti(hu: np.ndarray, affine: np.ndarray, path: Path, lps: bool, intercept: bool):
    if lps:  # store as DICOM-derived files often are: x and y axes flipped
        hu = hu[::-1, ::-1, :].copy()
        affine = affine.copy()
        extent = np.diag(affine)[:2] * (np.array(hu.shape[:2]) - 1)
        affine[0, 3] += extent[0]
        affine[1, 3] += extent[1]
        affine[0, 0] *= -1
        affine[1, 1] *= -1
    data = (hu.astype(np.int32) + 1024).astype(np.int16) if intercept else hu
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(np.int16)
    if intercept:  # raw values + rescale intercept, as scanners write them
        img.header.set_slope_inter(1.0, -1024.0)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def generate_phantom_ct(
    out_dir: str | Path,
    n_patients: int = 300,
    seed: int = 0,
    progress: bool = True,
    matrix: tuple[int, int, int] | None = None,
    fmt: str = "nifti",
) -> Path:
    """Write the phantom CT set to ``out_dir`` (images/, labels.csv, regions.json).

    ``fmt`` ``nifti``: ``images/<scan>.nii.gz``; ``dicom``: ``images/<scan>/`` holding one
    DICOM file per axial slice (every other scan's files without the ``.dcm`` extension).

    ``matrix`` (x, y, z voxels) gives every scan the same grid, e.g. (256, 256, 128) for
    volumes of realistic raw size (benchmarks); by default the matrix varies (~120x120x70).
    The folder appears whole or not at all: it is built beside ``out_dir`` and renamed.
    Returns the path of the labels CSV.
    """
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:
        (tmp / "images").mkdir()
        rng = np.random.default_rng(seed)
        rows, regions = [], {}
        n_scans = rng.choice([1, 1, 2, 2, 3], size=n_patients)
        bar = tqdm(total=int(n_scans.sum()), desc="phantom CT", disable=not progress)
        for p in range(n_patients):
            prng = np.random.default_rng([seed, p])
            anat = _sample_anatomy(prng)
            center = CENTERS[p % len(CENTERS)]
            for s in range(int(n_scans[p])):
                srng = np.random.default_rng([seed, p, s])
                findings = dict(anat.findings)
                if s > 0:  # acute findings come and go between a patient's scans
                    # in FINDINGS order: a set's order follows the per-process string hash,
                    # and once gave two different data sets from one seed
                    for f in (f for f in FINDINGS if f not in CHRONIC):
                        findings[f] = bool(srng.random() < PREVALENCE[f])
                hu, affine, reg = _render_scan(anat, srng, findings, matrix)
                name = f"P{p:04d}_S{s}"
                lps, intercept = bool(srng.random() < 0.5), bool(srng.random() < 0.5)
                if fmt == "dicom":
                    rel = f"images/{name}"
                    suffix = ".dcm" if len(rows) % 2 == 0 else ""
                    write_series(
                        hu, affine, tmp / rel, patient_id=name, intercept=intercept, suffix=suffix
                    )
                else:
                    rel = f"images/{name}.nii.gz"
                    _save_nifti(hu, affine, tmp / rel, lps=lps, intercept=intercept)
                rows.append(
                    {"image": rel, "patient_id": f"P{p:04d}", "center": center}
                    | {f: int(findings[f]) for f in FINDINGS}
                )
                regions[rel] = reg
                bar.update()
        bar.close()
        write_csv(tmp / "labels.csv", rows)
        (tmp / "regions.json").write_text(json.dumps(regions))
        (tmp / "README.txt").write_text(
            f"Phantom chest CT, generated by src.data.phantom (seed {seed}, "
            f"{n_patients} patients, {len(rows)} scans). Regenerate by deleting this folder.\n"
        )
    return out_dir / "labels.csv"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="", help="default data/phantom_ct (_dicom with dicom)")
    ap.add_argument("--n-patients", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--format", choices=["nifti", "dicom"], default="nifti", help="a file or a folder per scan"
    )
    args = ap.parse_args(argv)
    out = args.out or ("data/phantom_ct_dicom" if args.format == "dicom" else "data/phantom_ct")
    csv_path = generate_phantom_ct(
        out, args.n_patients, args.seed, progress=sys.stderr.isatty(), fmt=args.format
    )
    print(f"phantom CT written: {csv_path}")


if __name__ == "__main__":
    main()
