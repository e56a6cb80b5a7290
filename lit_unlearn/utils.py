"""Small shared helpers: cache home, atomic directory writes, file locks, RNG isolation."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import torch


def cache_home() -> Path:
    """``$LIT_UNLEARN_HOME``, default ``~/.cache/lit_unlearn``."""
    return Path(os.environ.get("LIT_UNLEARN_HOME", Path.home() / ".cache" / "lit_unlearn")).expanduser()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; rename it into place on success.

    On error the temporary directory is removed, so a crash never leaves a half-written
    ``target``. An existing ``target`` is replaced only after the new one is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock (POSIX ``flock``); a no-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU and CUDA) global RNG state on exit."""
    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


_RUN_SETUP_FILES = ("hparams.yaml", "config.yaml", "run_info.json")


def remove_run_dir_if_untrained(trainer) -> None:
    """After a failure before the first optimizer step, remove the log directory the run created.

    Only directories holding nothing but what a run writes at start-up (event files,
    ``hparams.yaml``, ``config.yaml``) are removed, then their parents if left empty.
    """
    if trainer.global_step > 0 or trainer.ckpt_path or not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        root = getattr(logger, "root_dir", None) or getattr(logger, "save_dir", None)
        if not log_dir or not Path(log_dir).is_dir():
            continue
        files = [p for p in Path(log_dir).rglob("*") if p.is_file()]
        if all(p.name.startswith("events.out.tfevents") or p.name in _RUN_SETUP_FILES for p in files):
            if hasattr(logger, "_experiment") and logger._experiment is not None:
                logger._experiment.close()
            shutil.rmtree(log_dir, ignore_errors=True)
            stop = Path(getattr(logger, "save_dir", None) or root or log_dir).resolve().parent
            parent = Path(log_dir).resolve().parent
            while parent != stop and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's info messages (device summary, tips) for an internal Trainer."""
    import logging

    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it into place on success, remove it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
