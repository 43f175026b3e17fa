"""Every registered model does a forward and backward pass; unknown names list known ones."""

from __future__ import annotations

import pytest
import torch

from src.models import ModelError, create_model, list_models

TINY = {
    "resnet3d": {"depth": 10, "widths": [4, 8, 8, 8]},
    "resnet2d": {"depth": 10, "widths": [4, 8, 8, 8]},
    "densenet3d": {"init_features": 4, "growth_rate": 4},
    "densenet2d": {"init_features": 4, "growth_rate": 4},
    "vit3d": {"patch_size": 8, "hidden_size": 32, "mlp_dim": 64, "num_layers": 1, "num_heads": 2},
    "efficientnet2d": {"variant": "b0"},
}


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    dims = 3 if name.endswith("3d") else 2
    size = (32, 32, 32) if dims == 3 else (32, 32)  # DenseNet halves the size 5 times
    model = create_model(name, dims, 1, 5, size, **TINY.get(name, {}))
    x = torch.randn(2, 1, *size)
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[:3])


def test_every_model_has_a_tiny_setting():
    assert set(list_models()) == set(TINY)


def test_unknown_model_lists_known_names():
    with pytest.raises(ModelError) as err:
        create_model("resnet4d", 3, 1, 2)
    assert "resnet3d" in str(err.value) and "densenet3d" in str(err.value)


def test_unknown_param_names_the_key():
    with pytest.raises(ModelError, match=r"model\.params\.width: resnet3d has no parameter"):
        create_model("resnet3d", 3, 1, 2, width=3)


def test_wrong_dimensionality_is_explained():
    with pytest.raises(ModelError, match="3D model"):
        create_model("resnet3d", 2, 1, 2)


def test_densenet_stem_fits_medmnist_size():
    """The 7/2 stem and max-pool leave nothing of 28^3 for the third transition; a 3/2 stem
    without the pool does, and keeps the stride-2 first map (14^3)."""
    kw = {"spatial_dims": 3, "in_channels": 1, "num_classes": 1, "depth": 121}
    x = torch.zeros(2, 1, 28, 28, 28)
    with pytest.raises(RuntimeError):
        create_model("densenet3d", init_features=8, growth_rate=4, **kw)(x)
    net = create_model(
        "densenet3d", init_features=8, growth_rate=4, conv1_kernel=3, no_max_pool=True, **kw
    )
    assert net(x).shape == (2, 1)
    assert net.features.conv0(x).shape[2:] == (14, 14, 14)
