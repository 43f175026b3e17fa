"""Built-in phantom radiographs of a long bone: normal / benign / malignant, three centres.

Deterministic from a seed. Class shares follow the BTXRD bone-tumour set (1879 : 1525 : 342 per
3,746 images: the malignant class is rare, about 9 %). Every image shows one long bone (shaft,
cortex, medullary canal, flared ends) in soft tissue, at a random position, angle and size:

=========  =====================================================================================
class      signature
=========  =====================================================================================
normal     the bone alone
benign     a well-defined oval lytic lesion inside the bone, its sclerotic (bright) rim absent
           to strong
malignant  an ill-defined, mottled lesion that breaks the cortex; half of them also show
           periosteal spikes ("sunburst") and a soft-tissue mass beside the bone
=========  =====================================================================================

Lesions of both kinds range from faint to obvious (a per-patient conspicuity of 0.3-1), so the
classes overlap: a faint benign lesion without a rim and a malignant one without a mass differ
only in margin and texture. Three centres differ in exposure, contrast (gamma), noise, blur,
matrix size and file format (8-bit PNG, 16-bit PNG, JPEG); centre C is the odd one out (the
most noise and blur, the lowest resolution, JPEG), so holding it out (``center_holdout``) tests
generalisation to a site whose images look unlike any seen in training.
Patients have 1-5 images (views of the same lesion); a patient's images share class and centre.
``labels.csv`` has the columns ``image, label, patient_id, center``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from src.files import atomic_folder, write_csv

CLASSES = ["normal", "benign", "malignant"]
CLASS_SHARES = np.array([1879, 1525, 342]) / 3746
# exposure: overall brightness of bone; gamma: contrast curve; noise: quantum noise (std of
# [0, 1] intensity); blur: focal-spot blur (px); size: stored matrix (rows, columns)
CENTERS = {
    "A": {
        "exposure": 0.85,
        "gamma": 1.0,
        "noise": 0.02,
        "blur": 0.6,
        "size": (128, 128),
        "fmt": "png8",
    },
    "B": {
        "exposure": 0.65,
        "gamma": 0.7,
        "noise": 0.035,
        "blur": 0.9,
        "size": (160, 128),
        "fmt": "png16",
    },
    "C": {  # the odd one out: hard, noisy, blurred, low-resolution JPEGs
        "exposure": 0.95,
        "gamma": 1.7,
        "noise": 0.07,
        "blur": 1.1,
        "size": (112, 96),
        "fmt": "jpg",
    },
}
CENTER_SHARES = {"A": 0.45, "B": 0.35, "C": 0.20}


def _rotated_grid(shape: tuple[int, int], cx: float, cy: float, angle: float):
    """Pixel coordinates in the bone's frame: u along the shaft, v across it (pixels)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = xx - cx, yy - cy
    return dy * c + dx * s, -dy * s + dx * c


def _render(label: int, lesion: dict, rng: np.random.Generator, center: dict) -> np.ndarray:
    """One radiograph in [0, 1] (float32) of the center's matrix size."""
    h, w = center["size"]
    cx = w / 2 + rng.normal(0, w * 0.05)
    cy = h / 2 + rng.normal(0, h * 0.05)
    u, v = _rotated_grid((h, w), cx, cy, rng.normal(0, 0.2))
    scale = min(h, w) / 128 * rng.uniform(0.9, 1.1)
    half_len, radius = 52 * scale, 9 * scale * rng.uniform(0.85, 1.15)
    # flared ends: the radius grows towards both ends of the bone
    end = np.clip((np.abs(u) - 0.6 * half_len) / (0.4 * half_len), 0, 1)
    r = radius * (1 + 0.9 * end**2)
    inside = (np.abs(v) < r) & (np.abs(u) < half_len)
    depth = np.sqrt(np.clip(1 - (v / r) ** 2, 0, 1)) * inside  # chord through a cylinder
    canal = np.sqrt(np.clip(1 - (v / (r * 0.62)) ** 2, 0, 1)) * inside * (1 - end)
    bone = depth - 0.55 * canal  # bright cortex, darker medullary canal
    tissue_r = radius * 3.2
    tissue = 0.25 * np.sqrt(np.clip(1 - (v / tissue_r) ** 2, 0, 1))
    atten = tissue + bone
    if label > 0:
        lu = lesion["u"] * half_len
        lv = lesion["v"] * radius * 0.3
        size = lesion["size"] * radius
        d = np.sqrt(((u - lu) / (size * 1.4)) ** 2 + ((v - lv) / size) ** 2)
        c = lesion["conspicuity"]  # faint lesions of both kinds exist
        if label == 1:  # well-defined lytic lesion, a sclerotic rim of varying strength
            rim = ((d >= 1) & (d < 1.25)) * inside
            atten = atten - 0.45 * c * (d < 1) * inside + 0.35 * c * lesion["rim"] * rim
        else:  # mottled lysis breaking the cortex; sunburst spikes and a mass in some
            mottle = gaussian_filter(rng.random((h, w)).astype(np.float32), 1.2)
            mottle = (mottle - mottle.min()) / (np.ptp(mottle) + 1e-6)
            lytic = (d < 1.3) * (0.25 + 0.5 * mottle)
            atten = atten - c * lytic * (inside | (d < 1.0))
            if lesion["mass"]:
                side = np.sign(lesion["v"]) or 1.0
                mass = np.clip(
                    1 - np.hypot((u - lu) / (size * 2.2), (v - side * r) / (size * 1.6)), 0, 1
                )
                atten = atten + 0.35 * c * mass
                theta = np.arctan2(v - side * r, u - lu)
                spikes = (np.cos(theta * lesion["spikes"]) > 0.6) * (mass > 0.15) * (mass < 0.8)
                atten = atten + 0.3 * c * spikes * (np.sign(v - side * r) == side)
    atten = np.clip(atten, 0, None)
    image = center["exposure"] * (1 - np.exp(-1.6 * atten))
    image = np.clip(image, 0, 1) ** center["gamma"]
    image = gaussian_filter(image.astype(np.float32), center["blur"])
    image = image + rng.normal(0, center["noise"], image.shape) + 0.05
    return np.clip(image, 0, 1).astype(np.float32)


def _save(image: np.ndarray, path: Path, fmt: str) -> None:
    if fmt == "png16":
        Image.fromarray((image * 65535).round().astype(np.uint16)).save(path)
    elif fmt == "jpg":
        Image.fromarray((image * 255).round().astype(np.uint8)).save(path, quality=85)
    else:
        Image.fromarray((image * 255).round().astype(np.uint8)).save(path)


def draw_patients(n_patients: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per patient: number of images (1-5), class index and centre name."""
    rng = np.random.default_rng(seed)
    n_views = rng.integers(1, 6, size=n_patients)
    labels = rng.choice(len(CLASSES), size=n_patients, p=CLASS_SHARES)
    centers = rng.choice(list(CENTER_SHARES), size=n_patients, p=list(CENTER_SHARES.values()))
    return n_views, labels, centers


def generate_phantom_xray(
    out_dir: str | Path, n_patients: int = 1250, seed: int = 0, progress: bool = True
) -> Path:
    """Write the phantom radiographs to ``out_dir`` (images/, labels.csv); return the CSV path.

    About 3 images per patient (1-5). The folder appears whole or not at all: it is built
    beside ``out_dir`` and renamed.
    """
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:
        (tmp / "images").mkdir()
        n_views, labels, centers = draw_patients(n_patients, seed)
        rows = []
        bar = tqdm(total=int(n_views.sum()), desc="phantom X-ray", disable=not progress)
        for p in range(n_patients):
            prng = np.random.default_rng([seed, p])
            lesion = {
                "u": prng.uniform(-0.7, 0.7),
                "v": prng.uniform(-1, 1),
                "size": prng.uniform(0.5, 0.9),
                "spikes": int(prng.integers(10, 18)),
                # drawn after the above, so a patient's lesion keeps its place and size
                "conspicuity": prng.uniform(0.3, 1.0),
                "rim": prng.uniform(0.0, 1.0),  # benign: sclerotic rim, absent to strong
                "mass": bool(prng.random() < 0.5),  # malignant: mass and spikes, or neither
            }
            center = CENTERS[str(centers[p])]
            for s in range(int(n_views[p])):
                image = _render(int(labels[p]), lesion, np.random.default_rng([seed, p, s]), center)
                ext = "jpg" if center["fmt"] == "jpg" else "png"
                rel = f"images/P{p:04d}_V{s}.{ext}"
                _save(image, tmp / rel, center["fmt"])
                rows.append(
                    {
                        "image": rel,
                        "label": CLASSES[int(labels[p])],
                        "patient_id": f"P{p:04d}",
                        "center": str(centers[p]),
                    }
                )
                bar.update()
        bar.close()
        write_csv(tmp / "labels.csv", rows)
        (tmp / "README.txt").write_text(
            f"Phantom radiographs, generated by src.data.phantom_xray (seed {seed}, "
            f"{n_patients} patients, {len(rows)} images). Regenerate by deleting this folder.\n"
        )
    return out_dir / "labels.csv"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/phantom_xray")
    ap.add_argument("--n-patients", type=int, default=1250)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    csv_path = generate_phantom_xray(
        args.out, args.n_patients, args.seed, progress=sys.stderr.isatty()
    )
    print(f"phantom radiographs written: {csv_path}")


if __name__ == "__main__":
    main()
