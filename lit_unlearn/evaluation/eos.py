"""The final EOS label, which the published evaluation code leaves out of some metrics.

open-unlearning (``src/evals/metrics/utils.py``: ``tokenwise_logprobs`` and
``tokenwise_vocab_logprobs``) drops the last label of every example ("ignore eos
prediction") before exact memorization, extraction strength, Min-K% and Min-K%++; its QA
examples always end in the EOS it appends. MUSE scores ``tokenizer.encode(text)``, which has
no EOS. This library's datamodule appends EOS to every answer, and to every text that fits
``max_length``; an answer or text cut by ``max_length`` ends without one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_unlearn.objectives import IGNORE_INDEX


def without_final_eos(labels: Tensor, eos_id: int | None) -> Tensor:
    """``labels [B, T]`` with each row's last scored label set to ``-100`` where it is ``eos_id``.

    Rows whose last label is another token (an answer cut by ``max_length``) keep every label,
    so the scored tokens are those the published code scores. ``eos_id=None`` returns ``labels``.
    """
    if eos_id is None:
        return labels
    positions = torch.arange(labels.shape[-1], device=labels.device).expand_as(labels)
    last = torch.where(labels != IGNORE_INDEX, positions, -1).max(-1).values
    rows = torch.nonzero(last >= 0).squeeze(-1)
    cols = last[rows]
    final_eos = labels[rows, cols] == eos_id
    out = labels.clone()
    out[rows[final_eos], cols[final_eos]] = IGNORE_INDEX
    return out
