"""A registry of model builders and one factory, ``create_model``.

Builders take ``(spatial_dims, in_channels, num_classes, image_size, **params)`` whatever
MONAI's own argument names are, and return a module whose ``forward`` gives logits only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_COMMON = ("spatial_dims", "in_channels", "num_classes", "image_size")


class ModelError(ValueError):
    """An unknown model name or parameter; the message lists what is known."""


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: ``@register_model("densenet3d")`` puts a builder in the registry."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = builder
        return builder

    return wrap


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def model_params(name: str) -> list[str]:
    """The builder-specific parameters a model accepts (``model.params`` keys)."""
    sig = inspect.signature(get_builder(name))
    return [p for p in sig.parameters if p not in _COMMON]


def get_builder(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        raise ModelError(f"model.name: unknown model {name!r}; known: {', '.join(list_models())}")
    return _REGISTRY[name]


def check_model_params(name: str, params: Iterable[str]) -> None:
    """Raise ``ModelError`` for an unknown model ``name`` or a ``params`` key it does not take;
    cheap, so the trainer calls it before loading any data."""
    allowed = model_params(name)
    for key in params:
        if key not in allowed:
            raise ModelError(
                f"model.params.{key}: {name} has no parameter {key!r}; "
                f"it takes: {', '.join(allowed) or 'none'}"
            )


def create_model(
    name: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    image_size: Sequence[int] | None = None,
    **params: object,
) -> nn.Module:
    """Build registered model ``name``; unknown names or ``params`` raise ``ModelError``."""
    builder = get_builder(name)
    check_model_params(name, params)
    return builder(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=tuple(image_size) if image_size is not None else None,
        **params,
    )


def head_keys(
    name: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    image_size: Sequence[int] | None = None,
    **params: object,
) -> set[str]:
    """State-dict keys of the classifier head of model ``name``: those whose shape follows the
    number of classes (``fc.*`` of a ResNet, ``class_layers.out.*`` of a DenseNet, ...). Found by
    building the model for two class counts on the meta device: no weights are computed."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        a, b = (
            create_model(name, spatial_dims, in_channels, n, image_size, **params).state_dict()
            for n in (num_classes, num_classes + 1)
        )
    return {k for k, v in a.items() if v.shape != b[k].shape}


def _runs_at(model: nn.Module, in_channels: int, size: Sequence[int]) -> bool:
    """Whether a forward pass of one image of ``size`` gets through (meta tensors: shapes only)."""
    try:
        model(torch.empty(1, in_channels, *size, device="meta"))
    except RuntimeError:
        return False
    return True


def check_input_size(
    name: str, spatial_dims: int, in_channels: int, size: Sequence[int], **params: object
) -> None:
    """Raise ``ModelError`` when model ``name`` shrinks an input of ``size`` to nothing before
    its last layer (too many strides for the volume), naming the smallest size per axis that
    fits. Shapes only, on the meta device: no weights are computed and no data is needed."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = create_model(name, spatial_dims, in_channels, 2, size, **params).eval()
    if _runs_at(model, in_channels, size):
        return
    lo, hi = max(size), 4096
    if not _runs_at(model, in_channels, [hi] * spatial_dims):
        return  # not a matter of size: the real forward pass will say what is wrong
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _runs_at(model, in_channels, [mid] * spatial_dims) else (mid, hi)
    stem = [k for k in ("conv1_stride", "no_max_pool") if k in model_params(name)]
    smaller = f" or a stem that downsamples less (model.params: {', '.join(stem)})" if stem else ""
    raise ModelError(
        f"model.params / data.spatial_size: {name} with model.params {dict(params)} downsamples "
        f"data.spatial_size {list(size)} to nothing before its last layer; it needs at least "
        f"{hi} voxels per axis: raise data.spatial_size{smaller}"
    )
