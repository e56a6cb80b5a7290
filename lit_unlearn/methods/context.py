"""``EvalContext``: forward passes outside Lightning's loops, under the Trainer's precision and strategy."""

from __future__ import annotations

import contextlib


class EvalContext:
    """A re-enterable context: the Trainer's precision autocast, plus the FSDP root's gathered
    parameters (read-only) when the strategy is FSDP. Evaluation loops enter it once per batch;
    each ``with`` enters both afresh, and a failure while entering exits what was entered."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self._stacks: list[contextlib.ExitStack] = []

    def __enter__(self) -> None:
        from lightning.pytorch.strategies import FSDPStrategy

        with contextlib.ExitStack() as stack:
            stack.enter_context(self.trainer.precision_plugin.forward_context())
            strategy = self.trainer.strategy
            if isinstance(strategy, FSDPStrategy) and strategy.model is not None:
                from torch.distributed.fsdp import FullyShardedDataParallel

                stack.enter_context(FullyShardedDataParallel.summon_full_params(strategy.model, recurse=False,
                                                                                writeback=False))
            self._stacks.append(stack.pop_all())

    def __exit__(self, *exc) -> bool | None:
        return self._stacks.pop().__exit__(*exc)
