"""``lit-unlearn fit|validate|test --config ...``: a thin LightningCLI."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

import lit_unlearn  # noqa: F401  (imports every method and datamodule so short class names resolve)
from lit_unlearn import registry
from lit_unlearn.callbacks import LogProgress, RunSummary, SavePretrained
from lit_unlearn.datamodules import ForgetRetainDataModule
from lit_unlearn.methods import UnlearningModule
from lit_unlearn.utils import interactive, quiet_third_party

TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
               "init_args": {"save_dir": "runs", "default_hp_metric": False}},
    "num_sanity_val_steps": 0,  # the module evaluates the starting model itself
}


class UnlearnCLI(LightningCLI):
    """LightningCLI in subclass mode: ``--model NPO``, ``--data FictitiousPeople``.

    On top of Lightning's: every run gets a :class:`RunSummary` (``--summary.*``) and a
    :class:`SavePretrained` (``--save_pretrained.*``); a relative logger ``save_dir`` is taken
    relative to ``--trainer.default_root_dir``, so that one flag moves logs, checkpoints and the
    saved model; checkpoints load with ``weights_only=True`` unless asked otherwise; the
    default checkpoint callback also keeps ``last.ckpt``; and ``--ckpt_path last`` continues
    the newest run of the same logger name (its version directory, checkpoints and
    TensorBoard curves, with the events logged after the checkpoint's step dropped).
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(RunSummary, "summary")
        parser.add_lightning_class_args(SavePretrained, "save_pretrained")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.default_root_dir
        loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]
        for logger in loggers:
            args = getattr(logger, "init_args", None)
            save_dir = getattr(args, "save_dir", None)
            if root and isinstance(save_dir, str) and not Path(save_dir).is_absolute() and "://" not in save_dir:
                args.save_dir = str(Path(root) / save_dir)
            if self.subcommand == "test" and str(getattr(logger, "class_path", "")).endswith("TensorBoardLogger"):
                # test runs go under <save_dir>/test/<model>, not among the fit runs of the method's name
                args.name = f"test/{model_label(getattr(config.model.init_args, 'model', None))}"

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:  # jsonargparse wraps our argument errors; show the user ours
            raise _root_cause(err) from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        given = config.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        if (config.get("enable_progress_bar") is not False and not interactive()
                and not any(isinstance(c, ProgressBar) for c in given)):
            kwargs["callbacks"] = [*given, LogProgress()]  # a log file: a plain line every 50 steps or 30 s
        return super().instantiate_trainer(**kwargs)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "weights_only" in self._subcommand_method_arguments[subcommand] and kwargs.get("weights_only") is None:
            kwargs["weights_only"] = True  # never unpickle arbitrary objects from a checkpoint file
        ckpt = kwargs.get("ckpt_path")
        if ckpt == "last":
            found = continue_last_version(self.trainer)
            if found is not None:
                kwargs["ckpt_path"] = found
        elif (ckpt and ckpt not in ("best", "hpc") and not str(ckpt).lower().startswith("registry")
              and "://" not in str(ckpt) and not Path(ckpt).exists()):  # sharded checkpoints are directories
            raise FileNotFoundError(f"--ckpt_path {ckpt!r}: no such checkpoint file (or use 'last' to resume the "
                                    "newest run of this logger)")
        return kwargs

    def before_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.save_last is None:
            callback.save_last = True  # so that `--ckpt_path last` finds something after a crash


def model_label(model: Any) -> str:
    """A folder name for a model: ``runs/npo/version_3/model`` -> ``npo-version_3``, ``work/gold`` -> ``gold``."""
    if not isinstance(model, str) or not model:
        return "model"
    path = Path(model.replace("builtin:", "builtin-"))
    parts = [path.parent.parent.name, path.parent.name] if path.name == "model" and path.parent.name else [path.name]
    label = "-".join(p for p in parts if p)
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in label) or "model"


# `lit-unlearn test|validate` short forms: --model <model dir> evaluates that model (EvaluateOnly)
SHORT_FORMS = {"--suite": "--model.init_args.suite", "--gold": "--model.init_args.compare_with"}


def expand_short_forms(args: list[str]) -> list[str]:
    """``test --model DIR --suite TOFUSuite --gold GOLD`` -> the full LightningCLI arguments.

    ``--model`` with a method class (a registered name, a dotted path or a JSON/YAML mapping)
    is left alone; with anything else (a directory, a hub id, ``builtin:...``) the model is
    evaluated by :class:`~lit_unlearn.methods.EvaluateOnly` unless a config names a method."""
    if not args or args[0] not in ("test", "validate"):
        return args
    out, model, i = [args[0]], None, 1
    while i < len(args):
        key, eq, value = args[i].partition("=")
        if key in ("--model", *SHORT_FORMS) and (eq or i + 1 < len(args)):
            value, i = (value, i + 1) if eq else (args[i + 1], i + 2)
            if key != "--model":
                out += [SHORT_FORMS[key], value]
            elif _is_method(value):
                out += ["--model", value]
            else:
                model = value
            continue
        out.append(args[i])
        i += 1
    if model is not None:
        out = [out[0], "--model", "EvaluateOnly", *out[1:], "--model.init_args.model", model]
    return out


def _is_method(value: str) -> bool:
    text = value.strip()
    if text.startswith(("{", "class_path")) or text in registry.methods():
        return True
    return "." in text and "/" not in text and ":" not in text and not Path(text).exists()


def continue_last_version(trainer) -> str | None:
    """Point an unversioned TensorBoard logger at the newest earlier version that has a
    ``checkpoints/last*.ckpt`` and return that checkpoint; None when there is none."""
    logger = trainer.logger
    if not isinstance(logger, TensorBoardLogger) or logger._version is not None or logger._experiment is not None:
        return None
    root = Path(logger.root_dir)
    candidates = sorted(root.glob("version_*/checkpoints/last*.ckpt"), key=lambda f: f.stat().st_mtime)
    if not candidates:
        return None
    last = candidates[-1]
    version = last.parent.parent.name
    logger._version = int(version.split("_", 1)[1]) if version.split("_", 1)[1].isdigit() else version
    try:
        step = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0)
    except Exception as err:
        raise ValueError(f"--ckpt_path last: {last} cannot be read ({type(err).__name__}: {err}); pass an earlier "
                         "checkpoint of that directory explicitly") from None
    logger._kwargs["purge_step"] = step + 1  # keep what the killed run logged up to the checkpoint, drop the rest
    rank_zero_info(f"Resuming {last} (step {step}) in {last.parent.parent}")
    return str(last)


def _root_cause(err: BaseException) -> BaseException:
    """The outermost exception in the chain raised by lit-unlearn's own code (its message is the clear one)."""
    current: BaseException | None = err
    while current is not None:
        tb, last = current.__traceback__, None
        while tb is not None:
            last, tb = tb, tb.tb_next
        if last is not None and f"{os.sep}lit_unlearn{os.sep}" in last.tb_frame.f_code.co_filename:
            return current
        current = current.__cause__ or current.__context__
    return err


def cli_main(args: list[str] | None = None, run: bool = True) -> UnlearnCLI:
    quiet_third_party()
    if args is None:  # the console script: Lightning reads sys.argv (passing it as args would warn)
        expanded = expand_short_forms(sys.argv[1:])
        if expanded != sys.argv[1:]:
            sys.argv = [sys.argv[0], *expanded]
    else:
        args = expand_short_forms(list(args))
    return UnlearnCLI(
        UnlearningModule,
        ForgetRetainDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        parser_kwargs={"exit_on_error": False},  # raise, so that `main` prints one clear line
        args=args,
        run=run,
    )


# Errors about the user's input: one clear line, no traceback (LIT_UNLEARN_DEBUG=1 shows it).
INPUT_ERRORS = (ValueError, OSError, ImportError, argparse.ArgumentError)


def main(args: list[str] | None = None) -> None:
    """Console entry point (``lit-unlearn``): argument and input errors end the command with
    ``lit-unlearn: error: ...`` on the first line of stderr and exit status 2. ``lit-unlearn
    methods`` and ``lit-unlearn callbacks`` list what the registry holds; ``lit-unlearn tokenizer`` and
    ``lit-unlearn new-model`` make a tokenizer and a start model for your own data (:mod:`lit_unlearn.scratch`)."""
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["methods"]:
        print(registry.methods_table())
        return
    if argv[:1] == ["callbacks"]:
        print(registry.callbacks_table())
        return
    try:
        if argv[:1] == ["sweep"]:
            from lit_unlearn.sweep.runner import main as sweep_main

            sweep_main(argv)
            return
        if argv[:1] in (["tokenizer"], ["new-model"]):
            from lit_unlearn import scratch

            scratch.main(argv)
            return
        cli_main(args)
    except KeyboardInterrupt:
        raise
    except Exception as err:
        if isinstance(err, argparse.ArgumentError):
            message = _parse_error_message(str(err))
        else:
            kind = "" if isinstance(err, (ValueError, TypeError)) else f"{type(err).__name__}: "
            message = kind + (str(err).strip() or type(err).__name__)
        print(f"lit-unlearn: error: {message}", file=sys.stderr, flush=True)
        if os.environ.get("LIT_UNLEARN_DEBUG") or not isinstance(err, INPUT_ERRORS):
            traceback.print_exc()
        raise SystemExit(2) from None


_PARSER_NOISE = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")


def _parse_error_message(text: str) -> str:
    """jsonargparse's multi-line union report, cut to the key and the reasons that matter."""
    lines = [line.strip().lstrip("- ").strip() for line in text.splitlines()] or ["invalid arguments"]
    head, details = lines[0].rstrip(":"), [x for x in lines[1:] if x and not x.startswith(_PARSER_NOISE)]
    known = ", ".join(registry.methods())
    details = [f"unknown class {x.split(': ', 1)[1]!r} (a method name ({known}), a datamodule name such as "
               "FictitiousPeople, or an import path)" if x.startswith("Expected a dot import path string") else x
               for x in details]
    return f"{head}: {' '.join(details)}" if details else head


if __name__ == "__main__":
    main()
