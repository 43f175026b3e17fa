"""One typed, nested run configuration loaded from YAML and validated once at start-up.

Every error names the dotted key (``optim.lr: expected a float, got 'fast'``). Command-line
overrides use the same keys (``--set optim.lr=3e-4 train.epochs=20``). ``schema.py`` holds the
sections and keys with the meaning of each, ``validate.py`` builds and checks a Config,
``loading.py`` reads and writes YAML, and ``reference.py`` renders docs/CONFIG.md from the
schema (``python -m src.config --reference docs/CONFIG.md``).
"""

from src.config.loading import (
    add_override_argument,
    apply_overrides,
    config_to_dict,
    load_config,
    load_yaml,
    parse_overrides,
    save_config,
)
from src.config.schema import (
    AugmentConfig,
    CheckpointConfig,
    Config,
    ConfigError,
    DataConfig,
    EvaluationConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    PhantomConfig,
    SplitConfig,
    TrainConfig,
    WandbConfig,
    show_progress,
)
from src.config.validate import config_from_dict

__all__ = [
    "AugmentConfig",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "PhantomConfig",
    "SplitConfig",
    "TrainConfig",
    "WandbConfig",
    "add_override_argument",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_yaml",
    "parse_overrides",
    "save_config",
    "show_progress",
]
