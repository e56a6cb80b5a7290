"""``lit-unlearn fit|validate|test --config ...``: a thin LightningCLI."""

from __future__ import annotations

import os

from lightning.pytorch.cli import LightningCLI

import lit_unlearn  # noqa: F401  (imports every method and datamodule so short class names resolve)
from lit_unlearn.datamodules import ForgetRetainDataModule
from lit_unlearn.methods import UnlearningModule

TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "runs", "default_hp_metric": False}},
    "num_sanity_val_steps": 0,  # the module evaluates the starting model itself
}


class UnlearnCLI(LightningCLI):
    """LightningCLI in subclass mode: ``--model NPO``, ``--data FictitiousPeople``."""

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:  # jsonargparse wraps our argument errors; show the user ours
            raise _root_cause(err) from None


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
    return UnlearnCLI(
        UnlearningModule,
        ForgetRetainDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        args=args,
        run=run,
    )


def main() -> None:
    """Console entry point (``lit-unlearn``)."""
    cli_main()


if __name__ == "__main__":
    main()
