"""Model registry; importing this package registers every built-in model."""

from src.models import networks as _networks  # noqa: F401  (registers the builders)
from src.models.registry import ModelError, create_model, list_models, register_model

__all__ = ["ModelError", "create_model", "list_models", "register_model"]
