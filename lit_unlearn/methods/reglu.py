"""``REGLU``: LoRA initialised from forget/retain representations, kept away from the retain subspace."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lit_unlearn import checks
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.models import apply_lora
from lit_unlearn.objectives import gradient_ascent, token_hinge
from lit_unlearn.utils import atomic_dir, cache_home


def second_moment(sums: Tensor, ridge: float = 1e-4) -> Tensor:
    """``E[h hᵀ] + ridge I`` (float64) of per-example vectors ``sums [N, D]``."""
    h = sums.double()
    return h.T @ h / max(len(h), 1) + ridge * torch.eye(h.shape[1], dtype=torch.float64)


def top_eigenvectors(matrix: Tensor, k: int) -> Tensor:
    """The ``k`` eigenvectors of a symmetric matrix with the largest eigenvalues, ``[D, k]`` (float64)."""
    values, vectors = torch.linalg.eigh(matrix.double())
    return vectors[:, torch.argsort(values, descending=True)[:k]]


def orthogonality_penalty(b_matrices: list[Tensor], retain_bases: list[Tensor]) -> Tensor:
    """``Σ_layers ‖Bᵀ Q_ret‖_F²``: zero when every adapter's B is orthogonal to the retain subspace."""
    total = b_matrices[0].new_zeros((), dtype=torch.float32)
    for b, q in zip(b_matrices, retain_bases):
        total = total + (b.float().T @ q.to(b.device, torch.float32)).square().sum()
    return total


class REGLU(UnlearningModule):
    """Representation-guided LoRA unlearning (REGLU).

    Each adapted linear layer gets a LoRA adapter (peft) initialised from layer-output
    statistics: with ``C_f`` and ``C_r`` the second moments (float64, + 1e-4 I) of the
    token-summed layer outputs of ~``stat_examples`` forget and retain examples, ``Q`` holds
    the top-r eigenvectors of ``(1 - β) C_f - β C_r`` (directions strong on forget data and
    weak on retain data); ``B = Q``, ``A = Qᵀ W0`` and ``W0 <- W0 - s B A`` (``s`` the LoRA
    scaling), so the function is unchanged at step 0. Training updates only the adapters;
    the loss is the forget term (``"ga"``: -NLL/|y|, or ``"hinge"``: each answer token pushed
    a margin below the best other token) + retain NLL + ``λ_R Σ ‖Bᵀ Q_ret‖_F²`` with
    ``Q_ret`` the top ``retain_rank`` eigenvectors of ``C_r``. Statistics are cached under
    ``$LIT_UNLEARN_HOME/reglu``. At the end the adapter is merged into the model
    (``save_merged``) or saved beside the adjusted base (``adapter/`` and ``base/``).

    Args:
        rank: r (32). lora_alpha: α_lora (64). target_modules: module names to adapt.
        beta: β (0.7). reg_weight: λ_R (0.5). retain_rank: size of the retain subspace (128).
        stat_examples: forget and retain examples for the statistics (256 each).
        forget_loss: ``"ga"`` or ``"hinge"``. save_merged: merge the adapter when saving.
        **kwargs: see :class:`UnlearningModule` (published lr 1e-4).
    """

    forget_doc = "LoRA initialised from forget/retain representations; GA or hinge"
    retain_doc = "NLL + orthogonality to the retain subspace"

    supports_lora = False  # edits full-precision base weights
    requires_retain = True
    default_lr = 1e-4
    checkpoint_state = ("retain_bases", "initialised")

    def __init__(self, *args: Any, rank: int = 32, lora_alpha: float = 64.0,
                 target_modules: list[str] | None = None, beta: float = 0.7, reg_weight: float = 0.5,
                 retain_rank: int = 128, stat_examples: int = 256, forget_loss: str = "ga", save_merged: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for arg, value in (("rank", rank), ("retain_rank", retain_rank), ("stat_examples", stat_examples)):
            checks.positive_int("REGLU", arg, value)
        if not 0 <= beta <= 1:
            raise ValueError(f"REGLU: `beta` must be in [0, 1], got {beta!r}")
        checks.non_negative("REGLU", "lora_alpha", lora_alpha)
        checks.non_negative("REGLU", "reg_weight", reg_weight)
        if forget_loss not in ("ga", "hinge"):
            raise ValueError(f"REGLU: `forget_loss` must be 'ga' or 'hinge', got {forget_loss!r}")
        self.rank, self.lora_alpha, self.beta, self.reg_weight = rank, lora_alpha, beta, reg_weight
        self.target_modules = list(target_modules or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"])
        self.retain_rank, self.stat_examples, self.forget_loss, self.save_merged = (
            retain_rank, stat_examples, forget_loss, save_merged)
        self.retain_bases: dict[str, Tensor] = {}
        self.initialised = False

    # ---------------------------------------------------------------- model
    def configure_model(self) -> None:
        super().configure_model()
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            options = {"r": self.rank, "alpha": self.lora_alpha, "dropout": 0.0, "bias": "none",
                       "target_modules": self.target_modules}
            self.model = apply_lora(self.model, options)

    def lora_layers(self) -> dict[str, nn.Module]:
        from peft.tuners.lora import LoraLayer

        return {n: m for n, m in self.model.named_modules() if isinstance(m, LoraLayer)}

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not self.initialised:
            self.initialise()

    @torch.no_grad()
    def initialise(self) -> None:
        """Representation-guided adapter initialisation (the function stays the same)."""
        layers = self.lora_layers()
        stats = self.statistics(layers)
        for name, layer in layers.items():
            c_f, c_r = stats[name]["forget"], stats[name]["retain"]
            q = top_eigenvectors((1 - self.beta) * c_f - self.beta * c_r, self.rank)
            base = layer.base_layer.weight
            w0 = base.double()
            scale = layer.scaling["default"]
            # round B and A to the weight dtype first, then subtract exactly what they will add
            b, a = q.to(base.dtype), (q.T @ w0).to(base.dtype)
            layer.lora_B["default"].weight.copy_(b)
            layer.lora_A["default"].weight.copy_(a)
            base.copy_((w0 - scale * (b.double() @ a.double())).to(base.dtype))
            self.retain_bases[name] = top_eigenvectors(c_r, min(self.retain_rank, c_r.shape[0])).float()
        self.initialised = True

    def statistics(self, layers: dict[str, nn.Module]) -> dict[str, dict[str, Tensor]]:
        """Second moments of token-summed layer outputs on forget and retain data, cached on disk."""
        dm = self._datamodule()
        sets = {"forget": dm.forget_set, "retain": dm.retain_set}
        key_src = {"model": str(self.model_path), "modules": sorted(layers), "n": self.stat_examples,
                   "data": {k: [str(v.records.rows[i]) for i in range(min(len(v), self.stat_examples))]
                            for k, v in sets.items()}}
        key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
        path = cache_home() / "reglu" / f"stats-{key}"
        if (path / "stats.pt").exists() and self.model_path is not None:
            return torch.load(path / "stats.pt", weights_only=True)
        sums: dict[str, dict[str, list[Tensor]]] = {n: {"forget": [], "retain": []} for n in layers}
        current: dict[str, Any] = {}

        def hook(name):
            def fn(module, args, out):
                mask = current["mask"].unsqueeze(-1).to(out.dtype)
                sums[name][current["set"]].append((out * mask).sum(1).double().cpu())
            return fn

        handles = [layer.base_layer.register_forward_hook(hook(n)) for n, layer in layers.items()]
        was_training = self.model.training
        self.model.eval()
        try:
            with self.eval_context():
                for set_name, data in sets.items():
                    subset = torch.utils.data.Subset(data, range(min(len(data), self.stat_examples)))
                    for batch in dm.eval_dataloader(subset, shard=False):
                        batch = {k: v.to(self.device) for k, v in batch.items()}
                        current.update(set=set_name, mask=batch["attention_mask"])
                        self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   use_cache=False)
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        stats = {n: {s: second_moment(torch.cat(v[s])) for s in ("forget", "retain")} for n, v in sums.items()}
        if self.trainer.is_global_zero and self.model_path is not None:
            with atomic_dir(path) as tmp:
                torch.save(stats, tmp / "stats.pt")
        rank_zero_info(f"REGLU: statistics of {len(layers)} adapted layers from {self.stat_examples} forget and "
                       "retain examples")
        return stats

    # ---------------------------------------------------------------- training
    def penalty(self) -> Tensor:
        layers = self.lora_layers()
        names = list(self.retain_bases)
        return self.reg_weight * orthogonality_penalty([layers[n].lora_B["default"].weight for n in names],
                                                       [self.retain_bases[n] for n in names])

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        logits = self(forget)
        forget_loss = gradient_ascent(logits, forget["labels"]) if self.forget_loss == "ga" else token_hinge(
            logits, forget["labels"])
        penalty = self.penalty()
        return Objectives(forget=forget_loss, retain=self.retain_term(batch["retain"]), penalty=penalty,
                          logs={"orthogonality": penalty.detach()})

    # ---------------------------------------------------------------- saving
    def write_pretrained(self, directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """Merged weights (``save_merged``), or ``adapter/`` and the adjusted ``base/`` side by side."""
        if self.save_merged:
            self.model = self.model.merge_and_unload()  # the same function, plain weights
            super().write_pretrained(directory, state_dict)
            return
        self.model.save_pretrained(directory / "adapter")
        self.model.unload().save_pretrained(directory / "base", safe_serialization=True)
        self.tokenizer.save_pretrained(directory / "base")
        (directory / "README.txt").write_text(
            "REGLU adjusted the base weights (W0 - s B A at initialisation). Load with\n"
            "  PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('base'), 'adapter')\n")
