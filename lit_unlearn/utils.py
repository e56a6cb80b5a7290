"""Small shared helpers: cache home, atomic directory writes, file locks, RNG isolation, progress that
works in a log file, and quieter third-party output."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO, TypeVar

import torch


def cache_home() -> Path:
    """``$LIT_UNLEARN_HOME``, default ``~/.cache/lit_unlearn``."""
    return Path(os.environ.get("LIT_UNLEARN_HOME", Path.home() / ".cache" / "lit_unlearn")).expanduser()


def global_seed(default: int = 0) -> int:
    """The seed of the last ``seed_everything`` (``PL_GLOBAL_SEED``), else ``default``: what
    seeded parts add, so that ``--seed_everything N`` changes a run's randomness."""
    return int(os.environ.get("PL_GLOBAL_SEED", default))


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


@contextlib.contextmanager
def plain_tensor_defaults() -> Iterator[None]:
    """CPU as torch's default device and float32 as its default dtype inside, restored on exit.

    Lightning calls ``configure_model`` under the strategy's device (``torch.device("cuda")``)
    and the precision's dtype (bf16 under ``bf16-true``); a built-in model built or converted
    there on first use would draw CPU-generator random numbers on CUDA (an error) and be
    cached in the wrong dtype."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.device("cpu"):
            yield
    finally:
        torch.set_default_dtype(dtype)


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


PROGRESS_ENV = "LIT_UNLEARN_PROGRESS"
T = TypeVar("T")


def interactive(stream: TextIO | None = None) -> bool:
    """Whether progress is shown as an interactive (redrawn) bar rather than plain lines.

    ``$LIT_UNLEARN_PROGRESS`` decides when set: ``bar`` (interactive) or ``plain`` (lines, as in
    a log file); otherwise (unset, empty or ``auto``) whether ``stream`` (default ``sys.stdout``)
    is a terminal.
    """
    mode = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if mode in ("bar", "plain"):
        return mode == "bar"
    if mode not in ("", "auto"):
        raise ValueError(f"${PROGRESS_ENV}={os.environ[PROGRESS_ENV]!r}: expected 'bar', 'plain' or 'auto'")
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def format_duration(seconds: float) -> str:
    """``4.2s``, ``42s``, ``1m52s``, ``2h05m``."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_rate(per_second: float) -> str:
    """``2.5 it/s``, or ``4.0 s/it`` below one iteration per second."""
    if per_second >= 1 or per_second <= 0:
        return f"{per_second:.3g} it/s"
    return f"{1 / per_second:.3g} s/it"


def progress(iterable: Iterable[T], desc: str, total: int | None = None, *, disable: bool = False,
             leave: bool = False, every_seconds: float = 30.0, file: TextIO | None = None) -> Iterable[T]:
    """``iterable`` with progress: a tqdm bar on a terminal, plain lines in a log file.

    Where :func:`interactive` is false for ``file`` (default ``sys.stderr``, tqdm's stream), one
    line ``desc: 12/40 (30%) 0.41 it/s ETA 1m08s`` every ``every_seconds`` and, if any was
    printed, ``desc: 40 done in 1m38s`` at the end; a loop shorter than ``every_seconds`` prints
    nothing. ``disable``: ``iterable`` itself.
    """
    if disable:
        return iterable
    if interactive(sys.stderr if file is None else file):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=leave, file=file)
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return _plain_progress(iterable, desc, total, every_seconds, file)


def _plain_progress(iterable: Iterable[T], desc: str, total: int | None, every_seconds: float,
                    file: TextIO | None) -> Iterator[T]:
    started = last = time.monotonic()
    done, printed = 0, False
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_seconds:
            rate = done / max(now - started, 1e-9)
            if total:
                eta = format_duration((total - done) / rate) if rate > 0 else "?"
                where = f"{done}/{total} ({100 * done / total:.0f}%) {format_rate(rate)} ETA {eta}"
            else:
                where = f"{done} {format_rate(rate)}"
            print(f"{desc}: {where}", file=sys.stderr if file is None else file, flush=True)
            last, printed = now, True
    if printed:
        print(f"{desc}: {done} done in {format_duration(time.monotonic() - started)}",
              file=sys.stderr if file is None else file, flush=True)


# Lightning's advertisements ("💡 Tip: ... try installing [litlogger] / [litmodels]"), logged
# through rank_zero_info on these loggers.
_TIP_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


def is_third_party_tip(message: str) -> bool:
    """Whether a log message is a third-party tip (an advertisement, nothing about this run)."""
    text = message.lstrip()
    return text.startswith("💡 Tip") or (text.startswith("Tip:") and ("litlogger" in text or "litmodels" in text))


class ThirdPartyTipFilter(logging.Filter):
    """Drops the log records :func:`is_third_party_tip` recognises; keeps every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to drop
            return True
        return not is_third_party_tip(message)


_TIP_FILTER = ThirdPartyTipFilter()


def quiet_third_party() -> None:
    """Silence third-party noise that says nothing about the run (idempotent): Lightning's
    "💡 Tip" advertisements, and torch's FutureWarning about ``isinstance(treespec, LeafSpec)``
    that Lightning's own ``_pytree`` helper triggers on every fit (not fixable here)."""
    for name in _TIP_LOGGERS:
        logger = logging.getLogger(name)
        if _TIP_FILTER not in logger.filters:
            logger.addFilter(_TIP_FILTER)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
