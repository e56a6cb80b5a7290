"""Running ``lit-unlearn`` in a subprocess (single process or DDP on CPU) on the tiny preset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
TINY = str(CONFIGS / "data" / "fictitious_tiny.yaml")
# The tiny built-in model has 2 layers; configs that name a layer of the 4-layer small model need these.
TINY_OVERRIDES = {"rmu": ["--model.init_args.layer=1"], "srmu": ["--model.init_args.layer=1"]}

# DDP on CPU (gloo) runs in subprocesses; tested on Linux only.
requires_ddp = pytest.mark.skipif(sys.platform != "linux", reason="DDP on CPU (gloo) is tested on Linux")


def method_config(name: str) -> str:
    """Path of a shipped method config, ``"npo"`` -> ``configs/methods/npo.yaml``."""
    return str(CONFIGS / "methods" / f"{name.removesuffix('.yaml')}.yaml")


def tiny_cli_args(config: str, *extra: str, steps: int = 4) -> list[str]:
    """``fit`` arguments for a shipped method config on the tiny preset, quiet and short."""
    name = Path(config).stem
    return ["fit", "--config", method_config(config), "--config", TINY, *TINY_OVERRIDES.get(name, []),
            f"--trainer.max_steps={steps}", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", *extra]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``lit-unlearn`` subprocess: this one, one thread per process, then ``env``."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}


def lit_unlearn(args: list[str], cwd: Path, timeout: int = 600, check: bool = True,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the ``lit-unlearn`` console script with one thread per process (DDP ranks share 2 cores);
    with ``check``, a non-zero exit fails the test with the end of stderr."""
    out = subprocess.run(["lit-unlearn", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                         env=cli_env(env))
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def start_lit_unlearn(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``lit-unlearn`` in the background (output discarded), e.g. to kill it mid-run."""
    return subprocess.Popen(["lit-unlearn", *args], cwd=cwd, env=cli_env(env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def version_dir(save_dir: str | Path, name: str = "lightning_logs", version: int = 0) -> Path:
    """The TensorBoard version directory of a run: ``<save_dir>/<name>/version_<version>`` (its
    ``config.yaml``, ``run_info.json``, ``checkpoints/`` and, by default, the saved ``model/``)."""
    return Path(save_dir) / name / f"version_{version}"


def cli_fit(*args: str, save_dir: str | Path, steps: int = 2):
    """``lit-unlearn fit`` in this process for ``steps`` steps, logging under ``save_dir``, without
    checkpoints or progress bar; returns the ``UnlearnCLI`` (``.trainer``, ``.model``)."""
    from lit_unlearn.cli import cli_main

    return cli_main(["fit", *args, f"--trainer.max_steps={steps}", "--trainer.enable_progress_bar=false",
                     f"--trainer.logger.init_args.save_dir={save_dir}", "--trainer.enable_checkpointing=false"])
