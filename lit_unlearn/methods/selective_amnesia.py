"""``SelectiveAmnesia``: unlearn only in the MLPs of the layers that store the facts."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_unlearn import checks
from lit_unlearn.analysis.causal_tracing import causal_trace, subject_mask
from lit_unlearn.datamodules.encoding import collate
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.models import decoder_layers, layer_mlp
from lit_unlearn.objectives import nll


def adaptive_alpha(delta: float) -> float:
    """``clip(0.3 · 6^ΔL + 0.8, 1.2, 2.8)`` with ΔL = current retain CE - initial retain CE."""
    return min(2.8, max(1.2, 0.3 * 6.0**delta + 0.8))


class SelectiveAmnesia(UnlearningModule):
    """Layer-restricted unlearning: gradient ascent on the forget CE and descent on the retain
    CE, training only the MLPs of chosen layers, with an adaptive retain weight
    ``α = clip(0.3 · 6^ΔL + 0.8, 1.2, 2.8)`` (ΔL: the step's retain CE minus the first
    step's). The layers are given, or found by causal tracing on forget examples before
    the optimizer is built (the ``top_k`` layers with the largest indirect effect).

    Args:
        layers: 0-based layer indices to train; None traces and takes the top ``top_k``.
        top_k: layers to keep after tracing.
        trace_examples: forget examples used for tracing.
        noise_scale: subject-embedding noise for tracing, in embedding standard deviations.
        **kwargs: see :class:`UnlearningModule`.
    """

    forget_doc = "-CE on the MLPs of the layers causal tracing ranks highest"
    retain_doc = "CE, adaptive α"

    requires_retain = True
    adapts_retain_weight = True
    checkpoint_state = ("layers", "trace", "initial_retain")

    def __init__(self, *args: Any, layers: list[int] | None = None, top_k: int = 2, trace_examples: int = 32,
                 noise_scale: float = 3.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if layers is not None and (not layers or any(not isinstance(i, int) or i < 0 for i in layers)):
            raise ValueError(f"SelectiveAmnesia: `layers` must be a non-empty list of layer indices >= 0, "
                             f"got {layers!r}")
        checks.positive_int("SelectiveAmnesia", "top_k", top_k)
        checks.positive_int("SelectiveAmnesia", "trace_examples", trace_examples)
        checks.positive("SelectiveAmnesia", "noise_scale", noise_scale)
        self.layers, self.top_k, self.trace_examples, self.noise_scale = layers, top_k, trace_examples, noise_scale
        self.trace: list[float] | None = None
        self.initial_retain: float | None = None

    def trace_layers(self) -> list[float]:
        """Indirect effect of each layer's MLP on the forget answers (causal tracing)."""
        dm = self._datamodule()
        data = dm.forget_set
        rows = list(range(min(len(data), self.trace_examples)))
        entity = dm.fields_for(dm.forget_records).entity
        tok = self.tokenizer
        batches = []
        for start in range(0, len(rows), dm.eval_batch_size):
            chunk = rows[start : start + dm.eval_batch_size]
            batch = collate([data[i] for i in chunk], dm.pad_id)
            subjects = [tok(" " + str(dm.forget_records.rows[i].get(entity, "")), add_special_tokens=False)["input_ids"]
                        if dm.forget_records.rows[i].get(entity) else None for i in chunk]
            batch["subject_mask"] = subject_mask(batch["input_ids"], batch["labels"], subjects)
            batch.pop("fact_mask", None)
            batch.pop("has_fact", None)
            batches.append(batch)
        return causal_trace(self.model, batches, noise_scale=self.noise_scale).tolist()

    def configure_optimizers(self):
        if self.layers is None:
            self.trace = self.trace_layers()
            ranked = sorted(range(len(self.trace)), key=lambda i: -self.trace[i])
            self.layers = sorted(ranked[: self.top_k])
            rank_zero_info("SelectiveAmnesia causal trace (indirect effect per layer): "
                           + ", ".join(f"{i}: {e:.3f}" for i, e in enumerate(self.trace))
                           + f"; training the MLPs of layers {self.layers}")
        blocks = decoder_layers(self.model)
        if max(self.layers) >= len(blocks):
            raise ValueError(f"SelectiveAmnesia: layer {max(self.layers)} requested but the model has {len(blocks)}")
        keep = {id(p) for i in self.layers for n, p in layer_mlp(blocks[i]).named_parameters()
                if self.lora is None or "lora_" in n}  # with LoRA: the adapters inside those MLPs
        if not keep:
            raise ValueError(f"SelectiveAmnesia: `lora` puts no adapter in the MLPs of layers {self.layers}; "
                             "include the MLP projections in lora.target_modules")
        for p in self.model.parameters():
            p.requires_grad_(id(p) in keep)
        return super().configure_optimizers()

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget, retain = batch["forget"], batch["retain"]
        forget_ce = nll(self(forget), forget["labels"])
        retain_ce = nll(self(retain), retain["labels"])
        current = float(retain_ce.detach().mean())
        if self.initial_retain is None:
            self.initial_retain = current
        self.retain_weight = adaptive_alpha(current - self.initial_retain)
        return Objectives(forget=-forget_ce, retain=retain_ce, logs={"alpha": torch.tensor(self.retain_weight)})
