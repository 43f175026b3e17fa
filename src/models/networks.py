"""MONAI networks registered under one signature. Trained from scratch: no weights download."""

from __future__ import annotations

import math
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


class EvidenceMapResNet(nn.Module):
    """A MONAI ResNet cut after stage ``head_stage``, with a per-class evidence map and a pool.

    ``evidence`` is a 1x1(x1) convolution: one score map per class on the stage's grid (for a
    64x64x48 CT with a stride-4 stem, 8x8x6 at stage 2). The logit is the log-sum-exp of that
    map (``lse_r``: large is max pooling, small tends to the mean), so a finding is scored
    where its evidence is strongest, and Grad-CAM on ``evidence`` is that map: the multiple-
    instance head of weakly supervised localisation (Wang et al., ChestX-ray8, CVPR 2017).
    """

    def __init__(
        self, net: ResNet, head_stage: int, num_classes: int, lse_r: float, dropout: float
    ):
        super().__init__()
        self.conv1, self.bn1, self.act, self.maxpool = net.conv1, net.bn1, net.act, net.maxpool
        self.layers = nn.ModuleList(
            [net.layer1, net.layer2, net.layer3, net.layer4][:head_stage]
        )  # fmt: skip
        channels = _stage_channels(self.layers[-1])
        conv = Conv[Conv.CONV, net.conv1.weight.dim() - 2]
        self.dropout = nn.Dropout(dropout)
        self.evidence = conv(channels, num_classes, kernel_size=1)
        self.lse_r = lse_r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        for layer in self.layers:
            x = layer(x)
        s = self.evidence(self.dropout(x)).flatten(2)  # (B, classes, cells)
        r = self.lse_r
        return (torch.logsumexp(r * s, dim=2) - math.log(s.shape[2])) / r


def _stage_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage: its last block's residual output."""
    last = stage[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


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
    head: str = "avg",
    head_stage: int = 4,
    lse_r: float = 5.0,
) -> nn.Module:
    if depth not in _RESNET_LAYERS:
        raise ModelError(f"model.params.depth: resnet depth must be one of {list(_RESNET_LAYERS)}")
    if head not in ("avg", "evidence"):
        raise ModelError(f"model.params.head: must be 'avg' or 'evidence', got {head!r}")
    if head_stage not in (1, 2, 3, 4):
        raise ModelError(f"model.params.head_stage: must be 1, 2, 3 or 4, got {head_stage!r}")
    if head == "avg" and head_stage != 4:
        raise ModelError("model.params.head_stage: only the 'evidence' head can cut the network")
    if lse_r <= 0:
        raise ModelError(f"model.params.lse_r: must be positive, got {lse_r}")
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
    )
    if head == "evidence":
        return EvidenceMapResNet(net, head_stage, num_classes, lse_r, dropout)
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
        head: str = "avg",
        head_stage: int = 4,
        lse_r: float = 5.0,
    ) -> nn.Module:
        _need_dims(name, spatial_dims, dims)
        return _resnet(
            dims, in_channels, num_classes, depth, widths, conv1_kernel, conv1_stride,
            no_max_pool, norm, dropout, head, head_stage, lse_r,
        )  # fmt: skip

    build.__doc__ = f"MONAI ResNet in {dims}D, depth 10/18/34/50; ``widths`` narrows it."
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
