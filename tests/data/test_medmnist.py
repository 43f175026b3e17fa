"""MedMNIST download and import: small generated .npz files become the right files, labels and
splits; a malformed file is one error naming the file and the key. Downloads are served from a
local file in place of the network."""

from __future__ import annotations

import csv
import hashlib
import io
import urllib.error
import urllib.request

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from src.config import ConfigError, config_from_dict
from src.data.builtin import ensure_builtin_data
from src.data.medmnist import MEDMNIST_MD5, MEDMNIST_URL, import_medmnist, main
from src.data.records import DataError
from src.data.splits import prepare_splits
from src.training.tasks import build_task

COUNTS = {"train": 5, "val": 2, "test": 3}


def make_npz(path, image_shape, label_width=1, n_classes=2, seed=0, **replace):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in COUNTS.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        high = 2 if label_width > 1 else n_classes
        arrays[f"{split}_labels"] = rng.integers(0, high, (n, label_width), dtype=np.uint8)
    arrays |= replace
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_3d_import_writes_nifti_labels_and_official_splits(tmp_path):
    arrays = make_npz(tmp_path / "a.npz", (6, 7, 8), n_classes=2)
    out = tmp_path / "out" / "adrenal"
    csv_path = import_medmnist(tmp_path / "a.npz", out, progress=False)
    rows = read_csv(csv_path)
    assert list(rows[0]) == ["image", "label", "split"]
    assert [r["split"] for r in rows] == [s for s, n in COUNTS.items() for _ in range(n)]
    for split in COUNTS:
        split_rows = [r for r in rows if r["split"] == split]
        for i, row in enumerate(split_rows):
            img = nib.load(out / row["image"])
            assert img.get_data_dtype() == np.uint8
            np.testing.assert_array_equal(np.eye(4), img.affine)
            np.testing.assert_array_equal(np.asarray(img.dataobj), arrays[f"{split}_images"][i])
            assert int(row["label"]) == arrays[f"{split}_labels"][i, 0]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_2d_multilabel_import_writes_png_and_one_column_per_label(tmp_path):
    arrays = make_npz(tmp_path / "c.npz", (9, 11), label_width=3)
    out = tmp_path / "chest"
    assert main([str(tmp_path / "c.npz"), "--out", str(out)]) == 0
    rows = read_csv(out / "labels.csv")
    assert list(rows[0]) == ["image", "label_0", "label_1", "label_2", "split"]
    val = [r for r in rows if r["split"] == "val"]
    assert len(val) == COUNTS["val"]
    for i, row in enumerate(val):
        np.testing.assert_array_equal(
            np.array(Image.open(out / row["image"])), arrays["val_images"][i]
        )
        assert [int(row[f"label_{j}"]) for j in range(3)] == arrays["val_labels"][i].tolist()


@pytest.mark.parametrize(
    "replace, message",
    [
        ({"val_labels": None}, "key 'val_labels' is missing"),
        (
            {"test_labels": np.zeros((2, 1), np.uint8)},
            "'test_labels' has 2 labels but 'test_images' has 3",
        ),
        ({"train_images": np.zeros((5, 6, 7, 8), np.float32)}, "'train_images' has dtype float32"),
        ({"val_images": np.zeros((2, 6), np.uint8)}, "'val_images' has shape (2, 6)"),
        ({"test_images": np.zeros((3, 6, 7, 9), np.uint8)}, "'test_images' holds images of shape"),
        ({"train_labels": np.zeros((5, 1), np.float32)}, "'train_labels' has dtype float32"),
    ],
)
def test_malformed_npz_names_the_file_and_key(tmp_path, replace, message):
    make_npz(tmp_path / "bad.npz", (6, 7, 8), **replace)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        import_medmnist(tmp_path / "bad.npz", out, progress=False)
    assert message in str(err.value) and "bad.npz" in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "bad.npz"]


def test_cli_reports_error_without_traceback(tmp_path, capsys):
    assert main([str(tmp_path / "none.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "none.npz: file not found" in capsys.readouterr().err


def test_out_may_be_an_existing_empty_folder(tmp_path):
    make_npz(tmp_path / "a.npz", (9, 11))
    out = tmp_path / "empty"
    out.mkdir()
    assert main([str(tmp_path / "a.npz"), "--out", str(out)]) == 0
    assert len(read_csv(out / "labels.csv")) == sum(COUNTS.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "empty"]  # no temp left


def test_out_refuses_a_non_empty_folder(tmp_path, capsys):
    make_npz(tmp_path / "a.npz", (9, 11))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert main([str(tmp_path / "a.npz"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out}: already exists and is not an empty folder" in err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_md5_table_holds_the_official_adrenal_files():
    assert MEDMNIST_MD5["adrenalmnist3d"] == "bbd3c5a5576322bc4cdfea780653b1ce"
    assert MEDMNIST_MD5["adrenalmnist3d_64"] == "17721accfe9fb005146a47d33bc54b2f"
    assert MEDMNIST_URL.format(name="adrenalmnist3d").startswith("https://")


class FakeResponse(io.BytesIO):
    """What ``urlopen`` returns: local bytes; notes whether ``watch`` exists at each read."""

    def __init__(self, data, watch, seen):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}
        self.watch, self.seen = watch, seen

    def read(self, size=-1):
        self.seen.append(self.watch is not None and self.watch.exists())
        return super().read(size)


def serve(monkeypatch, data, watch=None):
    """Serve ``data`` for every URL; returns the URLs asked for and, per read, whether ``watch``
    existed then."""
    urls, seen = [], []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return FakeResponse(data, watch, seen)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return urls, seen


def test_download_writes_the_file_when_the_md5_matches(tmp_path, monkeypatch, capsys):
    make_npz(tmp_path / "served.npz", (4, 5, 6))
    data = (tmp_path / "served.npz").read_bytes()
    out = tmp_path / "npz"
    urls, seen = serve(monkeypatch, data, watch=out / "adrenalmnist3d.npz")
    monkeypatch.setitem(MEDMNIST_MD5, "adrenalmnist3d", hashlib.md5(data).hexdigest())
    assert main(["--download", "adrenalmnist3d", "--npz-dir", str(out)]) == 0
    assert urls == [MEDMNIST_URL.format(name="adrenalmnist3d")]
    assert seen and not any(seen)  # the real name appears only once the file is whole
    assert (out / "adrenalmnist3d.npz").read_bytes() == data
    assert [p.name for p in out.iterdir()] == ["adrenalmnist3d.npz"]  # no temp file left
    assert str(out / "adrenalmnist3d.npz") in capsys.readouterr().out
    import_medmnist(out / "adrenalmnist3d.npz", tmp_path / "imported", progress=False)


def test_download_with_a_wrong_md5_leaves_no_file(tmp_path, monkeypatch, capsys):
    make_npz(tmp_path / "served.npz", (4, 5, 6))
    serve(monkeypatch, (tmp_path / "served.npz").read_bytes())
    out = tmp_path / "npz"
    assert main(["--download", "adrenalmnist3d", "--npz-dir", str(out)]) == 2
    err = capsys.readouterr().err  # the progress bar, then one error line
    line = err.strip().splitlines()[-1]
    assert err.count("error:") == 1
    assert line.startswith(f"error: {out / 'adrenalmnist3d.npz'}: MD5 ")
    assert "bbd3c5a5576322bc4cdfea780653b1ce" in line and "partial file was deleted" in line
    assert list(out.iterdir()) == []


def test_download_offline_is_one_line_naming_url_file_and_the_alternative(
    tmp_path, monkeypatch, capsys
):
    def no_network(url, timeout=None):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    out = tmp_path / "npz"
    assert main(["--download", "pneumoniamnist", "--npz-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert MEDMNIST_URL.format(name="pneumoniamnist") in err
    assert str(out / "pneumoniamnist.npz") in err
    assert "--set data.medmnist_npz=PATH" in err
    assert not (out / "pneumoniamnist.npz").exists()


def test_download_of_an_unknown_name_lists_the_known_ones(capsys):
    assert main(["--download", "pneumonia"]) == 2
    err = capsys.readouterr().err
    assert "'pneumonia'" in err and "pneumoniamnist, " in err and "adrenalmnist3d_64" in err


def medmnist_config(npz, root):
    return config_from_dict(
        {
            "data": {
                "medmnist_npz": str(npz),
                "csv": str(root / "labels.csv"),
                "image_root": str(root),
                "task": "binary",
                "label_columns": ["label"],
                "class_names": ["normal", "abnormal"],
                "spacing": [],
                "spatial_size": [6, 7, 8],
            }
        }
    )


def test_config_imports_on_first_use_and_reuses_the_folder(tmp_path):
    make_npz(tmp_path / "a.npz", (6, 7, 8))
    root = tmp_path / "data" / "a"
    cfg = medmnist_config(tmp_path / "a.npz", root)
    (tmp_path / "run").mkdir()
    parts = prepare_splits(cfg, tmp_path / "run", reuse=False, task=build_task(cfg), progress=False)
    assert {k: len(v) for k, v in parts.items()} == COUNTS  # the official split, untouched
    mtime = (root / "labels.csv").stat().st_mtime_ns
    ensure_builtin_data(cfg, progress=False)
    assert (root / "labels.csv").stat().st_mtime_ns == mtime  # not imported twice
    make_npz(tmp_path / "b.npz", (6, 7, 8), seed=1)
    ensure_builtin_data(medmnist_config(tmp_path / "b.npz", root), progress=False)
    assert (root / "labels.csv").stat().st_mtime_ns != mtime  # another source: imported anew


@pytest.mark.parametrize(
    "file_name, command",
    [
        ("adrenalmnist3d_64.npz", "python -m src.data.medmnist --download adrenalmnist3d_64"),
        ("mine.npz", "python -m src.data.medmnist --download NAME"),
    ],
)
def test_missing_npz_says_how_to_download_it(tmp_path, file_name, command):
    npz = tmp_path / "elsewhere" / file_name
    cfg = medmnist_config(npz, tmp_path / "data" / "a")
    with pytest.raises(DataError) as err:
        ensure_builtin_data(cfg, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{npz}: file not found; download it with {command}")
    assert "--set data.medmnist_npz=PATH" in message
    if file_name != "mine.npz":  # the download lands where the config looks
        assert f"--npz-dir {npz.parent}," in message


def test_config_never_overwrites_a_users_folder(tmp_path):
    make_npz(tmp_path / "a.npz", (6, 7, 8))
    root = tmp_path / "mine"
    root.mkdir()
    (root / "labels.csv").write_text("image,label,split\n")
    ensure_builtin_data(medmnist_config(tmp_path / "a.npz", root), progress=False)
    assert (root / "labels.csv").read_text() == "image,label,split\n"


def test_config_refuses_a_phantom_and_a_medmnist_file_at_once(tmp_path):
    raw = {
        "data": {
            "medmnist_npz": "x.npz",
            "phantom": {"kind": "ct"},
            "csv": "d/labels.csv",
            "image_root": "d",
            "label_columns": ["label"],
        }
    }
    with pytest.raises(ConfigError, match=r"data\.medmnist_npz: set either"):
        config_from_dict(raw)
