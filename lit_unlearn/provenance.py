"""What a run needs to be reproduced: versions, seed, model, data fingerprint, settings."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from lit_unlearn.utils import atomic_write_text

PACKAGES = ("lit-unlearn", "torch", "lightning", "transformers", "tokenizers", "safetensors", "peft", "bitsandbytes",
            "torchmetrics", "jsonargparse", "numpy", "tensorboard")
RUN_INFO = "run_info.json"


def versions() -> dict[str, str | None]:
    """Installed versions of Python, lit-unlearn and its dependencies (None: not installed)."""
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_record(module, datamodule=None) -> dict[str, Any]:
    """The reproducibility record of a fit: settings (hyper-parameters), seed, versions and
    the data fingerprint (``ForgetRetainDataModule.fingerprint``)."""
    record: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": type(module).__name__,
        "model": module.model_path,
        "hyperparameters": _plain(dict(module.hparams)),
        "seed": os.environ.get("PL_GLOBAL_SEED"),
        "versions": versions(),
    }
    if datamodule is not None:
        record["data"] = {"class": type(datamodule).__name__, "hyperparameters": _plain(dict(datamodule.hparams))}
        if hasattr(datamodule, "fingerprint"):
            record["data"]["sha256"] = datamodule.fingerprint()
    return record


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON through a temporary file renamed into place."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
