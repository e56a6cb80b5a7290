"""``DataAttributionWeights`` (GUARD): down-weight forget examples whose unlearning would hurt retain data."""

from __future__ import annotations

import re
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from lit_unlearn import checks
from lit_unlearn.objectives import nll


def guard_weights(alignment: Tensor, temperature: float) -> Tensor:
    """``w_i = N softmax(-a_i / τ)``: mean 1, smaller for forget examples more aligned with retain."""
    return alignment.numel() * torch.softmax(-alignment.double() / temperature, dim=0).to(alignment.dtype)


def sketch(vector: Tensor, dim: int, seed: int, offset: int = 0) -> Tensor:
    """Seeded CountSketch of a flat vector into ``dim`` buckets (a random projection that needs no
    stored matrix: each coordinate gets a bucket and a sign from a generator seeded per call)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + offset)
    buckets = torch.randint(dim, vector.shape, generator=g).to(vector.device)
    signs = (torch.randint(2, vector.shape, generator=g) * 2 - 1).to(vector.device, vector.dtype)
    return torch.zeros(dim, device=vector.device, dtype=vector.dtype).index_add_(0, buckets, vector * signs)


class DataAttributionWeights(Callback):
    """GUARD (interpretation): per-forget-example ``sample_weights`` from gradient alignment.

    At the start of fit (and every ``refresh_every_n_steps`` if set), at the current weights:
    ``ḡ_r`` is the gradient of the mean retain NLL over up to ``retain_examples`` rows, and
    for each forget example ``a_i = cos(∇ NLL(x_i), ḡ_r)``. Raising the NLL of an example
    aligned with the retain gradient raises the retain loss too, so such examples get less
    weight: ``w_i = N softmax(-a_i / τ)`` (mean 1), written to the module's
    ``sample_weights``, which every method's forget term uses. Gradients are taken on a
    parameter subset (``params`` regexes; default the MLP weights of the last decoder
    layer) and optionally compressed by a seeded CountSketch random projection of
    ``projection_dim`` buckets.

    Args:
        temperature: τ (0.1, 0.5, 1, 5 in the paper's sweep).
        params: regexes over parameter names; default the last layer's MLP.
        projection_dim: CountSketch size; None compares full (subset) gradients.
        retain_examples: retain rows for ḡ_r.
        refresh_every_n_steps: recompute every n optimizer steps (None: only at the start).
        seed: seed of the projection.
    """

    def __init__(self, temperature: float = 1.0, params: list[str] | None = None, projection_dim: int | None = None,
                 retain_examples: int = 256, refresh_every_n_steps: int | None = None, seed: int = 0) -> None:
        checks.positive("DataAttributionWeights", "temperature", temperature)
        checks.positive_int("DataAttributionWeights", "projection_dim", projection_dim, optional=True)
        checks.positive_int("DataAttributionWeights", "retain_examples", retain_examples)
        checks.positive_int("DataAttributionWeights", "refresh_every_n_steps", refresh_every_n_steps, optional=True)
        self.temperature, self.params, self.projection_dim = temperature, params, projection_dim
        self.retain_examples, self.refresh_every_n_steps, self.seed = retain_examples, refresh_every_n_steps, seed
        self.alignment: Tensor | None = None
        self.weights: Tensor | None = None
        self._last_step = -1

    def _parameters(self, module: LightningModule) -> list[tuple[str, torch.nn.Parameter]]:
        named = list(module.model.named_parameters())
        if self.params:
            chosen = [(n, p) for n, p in named if any(re.search(r, n) for r in self.params)]
        else:
            from lit_unlearn.models import decoder_layers, layer_mlp

            mlp = layer_mlp(decoder_layers(module.model)[-1])
            ids = {id(p) for p in mlp.parameters()}
            chosen = [(n, p) for n, p in named if id(p) in ids]
        if getattr(module, "quantization", None):  # quantized base weights take no gradient: use the adapters there
            chosen = [(n, p) for n, p in chosen if p.requires_grad]
            if not chosen:
                raise checks.incompatible("DataAttributionWeights", module, "with `quantization` gradients are taken "
                                          "on the LoRA adapters, and none sits in the chosen parameters; pass `params` "
                                          "matching adapter names (e.g. ['lora_'])")
        if not chosen:
            raise ValueError(f"DataAttributionWeights: `params` {self.params} match no parameter of the model")
        return chosen

    def _grad(self, module: LightningModule, params, batch: dict[str, Tensor]) -> Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
        logits = module.model(**inputs).logits
        grads = torch.autograd.grad(nll(logits, batch["labels"]).mean(), [p for _, p in params], allow_unused=True)
        parts = []
        for i, (g, (_, p)) in enumerate(zip(grads, params)):
            flat = (g if g is not None else torch.zeros_like(p)).reshape(-1).float()
            parts.append(sketch(flat, self.projection_dim, self.seed, i) if self.projection_dim else flat)
        return torch.stack(parts).sum(0) if self.projection_dim else torch.cat(parts)

    def compute(self, trainer: Trainer, module: LightningModule) -> Tensor:
        """Alignments and weights at the current parameters; sets ``module.sample_weights``."""
        dm = trainer.datamodule
        params = self._parameters(module)
        flags = [p.requires_grad for _, p in params]
        for _, p in params:
            p.requires_grad_(True)
        was_training = module.model.training
        module.model.eval()
        device = module.device
        try:
            with torch.enable_grad(), trainer.precision_plugin.forward_context():
                retain = torch.utils.data.Subset(dm.retain_set, range(min(len(dm.retain_set), self.retain_examples)))
                g_r, n = None, 0
                for batch in dm.eval_dataloader(retain, shard=False):
                    batch = {k: v.to(device) for k, v in batch.items()}
                    g = self._grad(module, params, batch) * len(batch["index"])
                    g_r, n = (g if g_r is None else g_r + g), n + len(batch["index"])
                g_r = g_r / n
                alignment = torch.empty(len(dm.forget_set), device=device)
                for batch in dm.eval_dataloader(dm.forget_set, batch_size=1, shard=False):
                    batch = {k: v.to(device) for k, v in batch.items()}
                    g = self._grad(module, params, batch)
                    alignment[batch["index"]] = torch.nn.functional.cosine_similarity(g, g_r, dim=0)
        finally:
            module.model.train(was_training)
            for (_, p), flag in zip(params, flags):
                p.requires_grad_(flag)
        self.alignment = alignment
        self.weights = guard_weights(alignment, self.temperature)
        module.sample_weights = self.weights
        return self.weights

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        checks.only_one(self, trainer, pl_module, "`sample_weights`")
        if not getattr(pl_module, "uses_sample_weights", False):
            raise checks.incompatible("DataAttributionWeights", pl_module, "the method's loss does not use per-example "
                                      "`sample_weights`")
        if getattr(trainer.datamodule, "retain_set", None) is None:
            raise checks.incompatible("DataAttributionWeights", pl_module, "it needs the mean retain gradient and the "
                                      "datamodule has no retain set; pass `retain`")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.weights is None:
            self.compute(trainer, pl_module)
            self._last_step = trainer.global_step
            self._log(trainer)
        else:
            pl_module.sample_weights = self.weights.to(pl_module.device)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = self.refresh_every_n_steps
        step = trainer.global_step
        if n and step % n == 0 and step != self._last_step:
            self.compute(trainer, pl_module)
            self._last_step = step
            self._log(trainer)

    def _log(self, trainer: Trainer) -> None:
        stats = {"guard/weight_min": float(self.weights.min()), "guard/weight_max": float(self.weights.max()),
                 "guard/alignment_mean": float(self.alignment.mean())}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(stats, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"alignment": self.alignment, "weights": self.weights, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.alignment, self.weights = state_dict.get("alignment"), state_dict.get("weights")
        self._last_step = state_dict.get("last_step", -1)
