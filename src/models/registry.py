"""A registry of model builders and one factory, ``create_model``.

Builders take ``(spatial_dims, in_channels, num_classes, image_size, **params)`` whatever
MONAI's own argument names are, and return a module whose ``forward`` gives logits only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence

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
