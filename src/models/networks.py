"""MONAI networks registered under one signature. Built with random weights: pretrained weights
are loaded by the trainer (``model.pretrained``), never downloaded here."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Conv
from monai.networks.nets import DenseNet, EfficientNetBN, ResNet, ViT
from torch import nn

from src.models.registry import ModelError, register_model

_RESNET_LAYERS = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
}
_DENSENET_BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32)}


def _need_dims(name: str, spatial_dims: int, expected: int) -> None:
    if spatial_dims != expected:
        raise ModelError(
            f"model.name: {name} is a {expected}D model but data.spatial_size has "
            f"{spatial_dims} dimensions; pick a {spatial_dims}D model"
        )


def _resnet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    depth: int = 18,
    widths: Sequence[int] = (64, 128, 256, 512),
    conv1_kernel: int = 7,
    conv1_stride: int = 2,
    no_max_pool: bool = False,
    norm: str = "batch",
    dropout: float = 0.0,
    shortcut: str = "B",
    downsample_bias: bool = True,
) -> nn.Module:
    if depth not in _RESNET_LAYERS:
        raise ModelError(f"model.params.depth: resnet depth must be one of {list(_RESNET_LAYERS)}")
    if shortcut not in ("A", "B"):
        raise ModelError("model.params.shortcut: A (zero-padded identity) or B (1x1 convolution)")
    block, layers = _RESNET_LAYERS[depth]
    net = ResNet(
        block=block,
        layers=layers,
        block_inplanes=list(widths),
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_size=conv1_kernel,
        conv1_t_stride=conv1_stride,
        no_max_pool=no_max_pool,
        num_classes=num_classes,
        norm=norm,
        shortcut_type=shortcut,
        bias_downsample=downsample_bias,
    )
    if dropout > 0:
        net.fc = nn.Sequential(nn.Dropout(dropout), net.fc)
    return net


def _resnet_family(name: str, dims: int) -> None:
    def build(
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int] | None = None,
        depth: int = 18,
        widths: Sequence[int] = (64, 128, 256, 512),
        conv1_kernel: int = 7,
        conv1_stride: int = 2,
        no_max_pool: bool = False,
        norm: str = "batch",
        dropout: float = 0.0,
        shortcut: str = "B",
        downsample_bias: bool = True,
    ) -> nn.Module:
        _need_dims(name, spatial_dims, dims)
        return _resnet(
            dims, in_channels, num_classes, depth, widths, conv1_kernel, conv1_stride,
            no_max_pool, norm, dropout, shortcut, downsample_bias,
        )  # fmt: skip

    build.__doc__ = (
        f"MONAI ResNet in {dims}D, depth 10/18/34/50; ``widths`` narrows it; ``shortcut`` and "
        "``downsample_bias`` as MedicalNet's (A, - for 18/34; B, false for 10/50)."
    )
    register_model(name)(build)


def _densenet_family(name: str, dims: int) -> None:
    def build(
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int] | None = None,
        depth: int = 121,
        init_features: int = 64,
        growth_rate: int = 32,
        dropout: float = 0.0,
        conv1_kernel: int = 7,
        conv1_stride: int = 2,
        no_max_pool: bool = False,
    ) -> nn.Module:
        _need_dims(name, spatial_dims, dims)
        if depth not in _DENSENET_BLOCKS:
            raise ModelError(
                f"model.params.depth: densenet depth must be one of {list(_DENSENET_BLOCKS)}"
            )
        net = DenseNet(
            spatial_dims=dims,
            in_channels=in_channels,
            out_channels=num_classes,
            init_features=init_features,
            growth_rate=growth_rate,
            block_config=_DENSENET_BLOCKS[depth],
            dropout_prob=dropout,
        )
        # Small inputs (MedMNIST's 28^3) vanish under the 7/2 stem and max-pool: three
        # transitions halve them again, so the stem is configurable as ResNet's is.
        if (conv1_kernel, conv1_stride) != (7, 2):
            net.features.conv0 = Conv[Conv.CONV, dims](
                in_channels, init_features, conv1_kernel, conv1_stride, conv1_kernel // 2,
                bias=False,
            )  # fmt: skip
        if no_max_pool:
            net.features.pool0 = nn.Identity()
        return net

    build.__doc__ = (
        f"MONAI DenseNet-121/169 in {dims}D; ``conv1_*`` and ``no_max_pool`` set the stem."
    )
    register_model(name)(build)


_resnet_family("resnet3d", 3)
_resnet_family("resnet2d", 2)
_densenet_family("densenet3d", 3)
_densenet_family("densenet2d", 2)


class ViTClassifier(nn.Module):
    """MONAI ViT returns (logits, hidden states); this returns the logits only."""

    def __init__(self, vit: ViT):
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)[0]


@register_model("vit3d")
def vit3d(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    image_size: Sequence[int] | None = None,
    patch_size: int = 16,
    hidden_size: int = 384,
    mlp_dim: int = 1536,
    num_layers: int = 8,
    num_heads: int = 6,
    dropout: float = 0.0,
) -> nn.Module:
    """MONAI ViT with a classification token; needs ``image_size`` (data.spatial_size)."""
    _need_dims("vit3d", spatial_dims, 3)
    if image_size is None:
        raise ModelError("vit3d needs image_size (data.spatial_size)")
    bad = [s for s in image_size if s % patch_size]
    if bad:
        raise ModelError(
            f"model.params.patch_size: {patch_size} must divide every size in "
            f"data.spatial_size {list(image_size)}"
        )
    if hidden_size % num_heads:
        raise ModelError("model.params.hidden_size: must be divisible by num_heads")
    vit = ViT(
        in_channels=in_channels,
        img_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        classification=True,
        num_classes=num_classes,
        dropout_rate=dropout,
        spatial_dims=3,
        post_activation="none",
    )
    return ViTClassifier(vit)


@register_model("efficientnet2d")
def efficientnet2d(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    image_size: Sequence[int] | None = None,
    variant: str = "b0",
) -> nn.Module:
    """MONAI EfficientNetBN b0-b3, trained from scratch (``pretrained=False``: no download)."""
    _need_dims("efficientnet2d", spatial_dims, 2)
    if variant not in ("b0", "b1", "b2", "b3"):
        raise ModelError("model.params.variant: efficientnet2d variant must be b0, b1, b2 or b3")
    return EfficientNetBN(
        f"efficientnet-{variant}",
        pretrained=False,
        spatial_dims=2,
        in_channels=in_channels,
        num_classes=num_classes,
    )
