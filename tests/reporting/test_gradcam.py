"""Grad-CAM maps for CNNs and the ViT; phantom regions land on the finding in model voxels."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.config import config_from_dict
from src.models import create_model
from src.reporting.gradcam import (
    aligned_upsampler,
    build_cam,
    input_saliency,
    load_for_cam,
    peak_in_boxes,
    peak_voxel,
    receptive_field_offsets,
    shift,
    shift_averaged,
    world_box_to_voxels,
)
from tests.conftest import tiny_raw_config


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("resnet3d", {"depth": 10, "widths": [4, 8, 8, 8], "conv1_kernel": 3}),
        (
            "vit3d",
            {"patch_size": 8, "hidden_size": 16, "mlp_dim": 16, "num_layers": 1, "num_heads": 2},
        ),
    ],
)
def test_cam_has_the_input_shape_and_unit_range(tiny_phantom, tmp_path, name, params):
    raw = tiny_raw_config(tiny_phantom, tmp_path)
    raw["model"] = {"name": name, "params": params}
    raw["data"]["spatial_size"] = [32, 32, 32]
    cfg = config_from_dict(raw)
    torch.manual_seed(0)
    model = create_model(name, 3, 1, 6, cfg.data.spatial_size, **params).eval()
    x = torch.rand(2, 1, *cfg.data.spatial_size, requires_grad=True)
    methods = ["gradcam", "guided"] if name == "resnet3d" else ["gradcam"]
    maps = [build_cam(model, cfg, m)[0](x, j) for m in methods for j in range(3)]
    for cam in maps:
        assert cam.shape == (2, 1, *cfg.data.spatial_size)
        assert float(cam.min()) >= 0 and float(cam.max()) <= 1 + 1e-5
    # an untrained net may give a flat map for a class, but not for every class
    assert any(float(c[i].max()) == pytest.approx(1.0, abs=1e-5) for c in maps for i in range(2))


def test_nodule_regions_map_onto_soft_tissue_in_model_voxels(tiny_phantom, tmp_path):
    """Nodules are soft tissue inside air-filled lung: the centre of each mapped box must be
    bright after preprocessing, in RAS- and LPS-stored files alike (a flipped or shifted
    mapping lands in lung)."""
    raw = tiny_raw_config(tiny_phantom, tmp_path)
    raw["data"] |= {"spacing": [3.0, 3.0, 3.0], "spatial_size": [128, 128, 112]}
    cfg = config_from_dict(raw)
    regions = json.loads((tiny_phantom / "regions.json").read_text())
    by_orientation = {}  # the first scan with nodules of each storage orientation
    for rel, found in regions.items():
        if "Lung nodule" in found:
            axcodes = nib.aff2axcodes(nib.load(str(tiny_phantom / rel)).affine)
            by_orientation.setdefault(axcodes, rel)
    assert set(by_orientation) == {("R", "A", "S"), ("L", "P", "S")}
    checked = 0
    for rel in by_orientation.values():
        image, affine = load_for_cam(str(tiny_phantom / rel), cfg)
        for box in regions[rel]["Lung nodule"]:
            vox = world_box_to_voxels(box["bbox_mm"], affine)
            centre = np.round(vox.mean(0)).astype(int)
            if np.any(centre < 0) or np.any(centre >= image.shape[1:]):
                continue  # cropped away by the model's field of view
            assert float(image[0][tuple(centre)]) > 0.55, (rel, box)  # HU > -230: not lung
            assert peak_in_boxes(centre, [vox])
            checked += 1
    assert checked >= 2


def test_peak_and_box_check():
    cam = np.zeros((1, 8, 8, 6))
    cam[0, 5, 2, 3] = 1
    peak = peak_voxel(cam)
    assert peak.tolist() == [5, 2, 3]
    assert peak_in_boxes(peak, [np.array([[4.8, 1.9, 2.6], [5.2, 2.2, 3.1]])])
    assert not peak_in_boxes(peak, [np.array([[0, 0, 0], [3, 3, 3]])])


def test_explain_cli_writes_a_gallery_of_the_run(tiny_run, capsys):
    from src.reporting.explain import main

    assert main(["--run", str(tiny_run), "--n", "1", "--split", "test"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("MONAI Grad-CAM on layer")
    pngs = [line for line in printed[1:] if line.endswith(".png")]
    assert pngs and all(
        (tiny_run / "gradcam-test").joinpath(p.rsplit("/", 1)[-1]).is_file() for p in pngs
    )


def test_input_saliency_keeps_the_positive_gradient_of_the_voxel_a_linear_model_reads():
    """max(d logit / d x, 0) of a model that reads one voxel for class 1: that voxel, then
    spread by the box filter (mean over the voxels inside the volume). A voxel read with a
    negative weight (darker raises the logit) gives nothing."""
    lin = torch.nn.Linear(8 * 8 * 8, 2, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1, np.ravel_multi_index((2, 5, 3), (8, 8, 8))] = 4.0
        lin.weight[0, np.ravel_multi_index((2, 5, 3), (8, 8, 8))] = -4.0
    model = torch.nn.Sequential(torch.nn.Flatten(), lin)
    x = torch.rand(1, 1, 8, 8, 8)
    raw = input_saliency(model, x, 1, smooth=1)[0, 0]
    assert peak_voxel(raw).tolist() == [2, 5, 3] and float(raw.sum()) == pytest.approx(4.0)
    smooth = input_saliency(model, x, 1, smooth=3)[0, 0]
    assert float(smooth[2, 5, 3]) == pytest.approx(4.0 / 27)
    assert float(smooth[0, 0, 0]) == 0.0 and float(smooth[1, 4, 2]) == pytest.approx(4.0 / 27)
    assert float(input_saliency(model, x, 0, smooth=1).abs().sum()) == 0.0
    assert not x.requires_grad  # the caller's tensor is left alone


def test_shift_moves_content_and_replicates_the_edge():
    x = torch.arange(5.0).view(1, 1, 5)
    assert shift(x, (2,)).flatten().tolist() == [0, 0, 0, 1, 2]
    assert shift(x, (-2,)).flatten().tolist() == [2, 3, 4, 4, 4]
    vol = torch.rand(1, 1, 6, 7, 8)
    back = shift(shift(vol, (1, 2, 3)), (-1, -2, -3))
    assert torch.equal(back[..., :5, :5, :5], vol[..., :5, :5, :5])


def test_shift_averaging_fills_in_the_grid_of_a_strided_map():
    """A stride-4 'map' that only sees every 4th voxel (nearest upsampling, as a strided layer
    does) puts a one-voxel spot that lies between its samples anywhere in the 4-voxel cell;
    averaged over half-stride shifts the peak lands within one voxel of the spot."""

    def strided(x: torch.Tensor, class_idx: int) -> torch.Tensor:
        coarse = F.avg_pool3d(x, 4, 4)
        return F.interpolate(coarse, scale_factor=4, mode="nearest")

    x = torch.zeros(1, 1, 16, 16, 16)
    spot = (6, 9, 10)
    x[(0, 0, *spot)] = 1.0
    single = peak_voxel(strided(x, 0)[0, 0])
    averaged = peak_voxel(shift_averaged(strided, (4, 4, 4))(x, 0)[0, 0])
    assert np.abs(single - np.array(spot)).max() >= 2  # the cell's corner, not the spot
    assert np.abs(averaged - np.array(spot)).max() <= 1
    one = shift_averaged(strided, (1, 1, 1))(x, 0)  # stride 1: the map itself, rescaled
    assert torch.allclose(one, strided(x, 0) / strided(x, 0).max())


def test_cam_upsampling_puts_each_cell_on_its_receptive_field():
    # Two stride-2 3x3 convs (padding 1) centre layer2's cell j on voxel 4j; plain trilinear
    # upsampling (MONAI's default) puts it on 4j + 1.5. With every conv weight positive and
    # equal, the network is linear and symmetric on a positive input, so each cell's receptive
    # field is centred on 4j exactly: the aligned upsampler must put a one-cell map there.
    model = create_model(
        "resnet3d", 3, 1, 2, depth=10, widths=[4, 4, 4, 4], conv1_kernel=3, no_max_pool=True
    ).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv3d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    size = [48, 48, 48]
    offsets = receptive_field_offsets(model, "layer2", size)
    assert np.allclose(offsets, 0.0, atol=1e-6)
    up = aligned_upsampler(offsets)(size)
    for cell in [(3, 5, 8), (8, 4, 6)]:
        onehot = torch.zeros(1, 1, 12, 12, 12)
        onehot[(0, 0, *cell)] = 1.0
        assert peak_voxel(up(onehot)[0, 0]).tolist() == [4 * c for c in cell]
        naive = peak_voxel(F.interpolate(onehot, size=size, mode="trilinear")[0, 0])
        assert np.all(naive - 4 * np.array(cell) >= 1)  # what the default would have drawn
