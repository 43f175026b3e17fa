"""Pretrained weights (``model.pretrained``), the frozen backbone (``model.freeze``) and the
head / backbone split that ``optim.backbone_lr_scale`` acts on.

Sources: a run folder or checkpoint of this trainer, any state-dict file (``module.`` prefixes of
DataParallel dropped, a ``state_dict`` entry unwrapped, as MedicalNet's files hold them), or
``medicalnet``: MONAI's MedicalNet loader for the 3D ResNets. Tensors are matched by name and
shape. The classifier head (``head_keys``) is taken over only when its shape fits and, for a
checkpoint of this trainer, the class names are the same; otherwise it keeps its fresh weights.
A shape mismatch anywhere else means another architecture, which is an error. Only a fresh run
loads them: a resume restores its own trained weights instead.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets.resnet import get_pretrained_resnet_medicalnet
from torch import nn

from src.config import Config
from src.models import ModelError
from src.training.utils import CheckpointError, load_checkpoint, resolve_checkpoint

MEDICALNET = "medicalnet"
MEDICALNET_URL = "https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet{d}/resolve/main/{f}"
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP and torch.compile wrappers
SHOWN = 4  # names listed per group in the summary line


def _strip(key: str) -> str:
    for prefix in PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _medicalnet(cfg: Config) -> dict[str, Any]:
    """MedicalNet's state dict for ``model.params.depth`` through MONAI's loader; when it cannot
    be fetched, one line naming the file to download and where to point ``model.pretrained``."""
    if cfg.model.name != "resnet3d":
        raise ModelError(f"model.pretrained: medicalnet weights are 3D ResNets; set model.name: "
                         f"resnet3d (got {cfg.model.name})")  # fmt: skip
    depth = int(cfg.model.params.get("depth", 18))
    try:
        return get_pretrained_resnet_medicalnet(depth, device="cpu", datasets23=True)
    except Exception as err:  # offline, no huggingface_hub, or the hub refused
        name = f"resnet_{depth}_23dataset.pth"
        why = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise ModelError(
            f"model.pretrained: medicalnet: cannot fetch {name} ({why}); download "
            f"{MEDICALNET_URL.format(d=depth, f=name)} (needs pip install huggingface_hub for "
            f"the automatic download), put it e.g. at pretrained/{name} and set "
            f"model.pretrained: pretrained/{name}"
        ) from None


Weights = tuple[dict[str, torch.Tensor], list[str] | None, str]


def read_pretrained(cfg: Config) -> Weights:
    """(state dict with wrapper prefixes dropped, class names when the source is a checkpoint of
    this trainer else None, what it is for the summary line) of ``model.pretrained``."""
    source = cfg.model.pretrained
    if source == MEDICALNET:
        raw, names, what = _medicalnet(cfg), None, "MedicalNet"
    else:
        path = Path(source)
        if path.is_dir():
            with contextlib.suppress(CheckpointError):  # no best.pt: named below
                path = resolve_checkpoint(path, "best")  # best.pt or best_<strategy>.pt
        if not path.is_file():
            raise ModelError(
                f"model.pretrained: {source} is no file and no run folder with a best "
                f"checkpoint; give a run folder, a checkpoint or state-dict file, or {MEDICALNET}"
            )
        raw = load_checkpoint(path, any_format=True)
        names, what = raw.get("class_names"), str(path)
    state = raw.get("model", raw.get("state_dict", raw))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(
            f"model.pretrained: {what} holds no state dict (a mapping of tensor names to "
            "tensors, or one under 'state_dict' or 'model')"
        )
    return {_strip(k): v for k, v in state.items()}, names, what


def _names(keys: list[str]) -> str:
    more = f", +{len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def load_pretrained(
    model: nn.Module, cfg: Config, head: set[str], weights: Weights | None = None
) -> str:
    """Load ``model.pretrained`` (``weights``: what ``read_pretrained`` returned, else read now)
    into ``model`` by name and shape; returns the one summary line (tensors loaded, new,
    skipped and why). A mismatched shape outside ``head`` is an error."""
    source, source_names, what = weights or read_pretrained(cfg)
    own = model.state_dict()
    same_classes = source_names is None or list(source_names) == cfg.class_names
    loaded, new, reinit, unused = {}, [], [], sorted(k for k in source if k not in own)
    for key, tensor in own.items():
        if key not in source:
            new.append(key)
        elif key in head and (source[key].shape != tensor.shape or not same_classes):
            reinit.append(key)
        elif source[key].shape != tensor.shape:
            raise ModelError(
                f"model.pretrained: {key} is {tuple(source[key].shape)} in {what} but "
                f"{tuple(tensor.shape)} in this model; the weights belong to another "
                "architecture: match model.name and model.params to it"
            )
        else:
            loaded[key] = source[key]
    if not loaded:
        raise ModelError(
            f"model.pretrained: no tensor of {what} matches this model by name (e.g. "
            f"{_names(unused)}); is it a network of model.name {cfg.model.name}?"
        )
    model.load_state_dict(loaded, strict=False)
    skipped = []
    if reinit:
        skipped.append(f"{_names(reinit)}: head re-initialised for classes {cfg.class_names}")
    if unused:
        skipped.append(f"{_names(unused)}: not in this model")
    return (
        f"pretrained {what}: loaded {len(loaded)} tensors; new {len(new)}"
        + (f" ({_names(new)})" if new else "")
        + f"; skipped {len(reinit) + len(unused)}"
        + (f" ({'; '.join(skipped)})" if skipped else "")
    )


def freeze_backbone(model: nn.Module, head: set[str]) -> None:
    """``model.freeze: backbone``: no gradient for any parameter outside the head."""
    for name, param in model.named_parameters():
        param.requires_grad_(name in head)
