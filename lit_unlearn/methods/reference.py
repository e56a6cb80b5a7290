"""The starting model θ0 that some methods compare with: a frozen copy, the same module with its
LoRA adapters disabled, or reference log-probs computed once per example and cached."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from lit_unlearn.objectives import sequence_logprob


class FrozenCopy:
    """A frozen deep copy of a model (eval mode, no grad). Held outside ``nn.Module`` attributes,
    so it stays out of ``state_dict``, checkpoints and the optimizer."""

    def __init__(self, model: nn.Module) -> None:
        self._module = copy.deepcopy(model).eval().requires_grad_(False)

    def like(self, model: nn.Module) -> nn.Module:
        """The copy, moved to ``model``'s device and (floating) dtype first if they differ."""
        ref = self._module
        param, ref_param = next(model.parameters()), next(ref.parameters())
        if ref_param.device != param.device or (ref_param.dtype != param.dtype and param.is_floating_point()):
            ref.to(device=param.device, dtype=param.dtype if param.is_floating_point() else None)
        return ref


def logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Logits ``[B, T, V]`` of ``model`` on a ``TokenBatch``."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits


@contextlib.contextmanager
def adapters_disabled(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within: a peft model computes its base function (adapters off); a no-op when not ``enabled``."""
    if not enabled:
        yield
        return
    with model.disable_adapter():
        yield


@torch.no_grad()
def adapters_off_logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Logits of a peft model with its adapters disabled, in eval mode (dropout off)."""
    was_training = model.training
    model.eval()
    try:
        with adapters_disabled(model):
            return logits(model, batch)
    finally:
        model.train(was_training)


@torch.no_grad()
def answer_logprobs(model: nn.Module, loader, n: int, device, context) -> Tensor:
    """Summed answer log-probs ``[n]`` of every example of an unsharded evaluation ``loader``,
    in row order (``batch["index"]``), with the model's current weights, in eval mode."""
    out = torch.empty(n, device=device)
    was_training = model.training
    model.eval()
    try:
        with context:
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                out[batch["index"]] = sequence_logprob(logits(model, batch), batch["labels"])[0].float()
    finally:
        model.train(was_training)
    return out
