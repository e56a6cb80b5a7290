"""``RMU`` and ``SRMU``: representation misdirection at one layer."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from lit_unlearn import checks
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.models import DOWN_PROJECTIONS, decoder_layers, hidden_at, mlp_down_projections
from lit_unlearn.objectives import activation_distance
from lit_unlearn.utils import global_seed


class RMU(UnlearningModule):
    """Representation misdirection for unlearning.

    Forget: layer-ℓ activations of forget tokens are pushed to ``c·u`` (u a fixed random unit
    vector); retain: layer-ℓ activations of retain tokens stay at the frozen model's. Both
    are ``‖·‖²`` averaged over hidden dimension and tokens (the reference code's
    ``mse_loss``). Only the chosen parameters train (default: the MLP down-projection of
    layers ℓ-2..ℓ); the forward pass stops at layer ℓ, and the frozen model's activations
    come from the same module with the original values of the trained parameters
    (``torch.func.functional_call``), so no second copy of the weights is kept. With ``lora``
    (and optionally ``quantization``) the adapters train instead, by default on the chosen
    down-projections, and the frozen activations come from the same model with adapters off.

    Args:
        layer: ℓ, 0-based (7 in the paper's 7B setting; must be below the layer count).
        trainable: regexes over parameter names; default the MLP down-projections of ℓ-2..ℓ.
        steering_coeff: c (6.5 on 7B WMDP, 300 on TOFU; scales with the activation norm).
        retain_weight: α (1200 on 7B WMDP, 1000 on TOFU).
        token_scope: ``"all"`` attended tokens (prompt and answer), ``"answer"`` tokens only, or
            ``"fact"``: on the forget side only the tokens of the records' fact spans (the batch's
            ``fact_mask``, e.g. the target's name with ``RWKU(name_spans=true)``), all attended
            tokens on the retain side. Knowledge about a subject is read from its name's tokens in
            early and middle MLP layers (ROME), so steering only those ties the forgetting to the name.
        seed: seed of the control vector u; None (default): the ``seed_everything`` seed (0 without it).
        **kwargs: see :class:`UnlearningModule` (published lr 5e-5).
    """

    forget_doc = "layer-ℓ activations pushed to c·u; only MLP down-projections of ℓ-2..ℓ train"
    retain_doc = "layer-ℓ activations kept"

    requires_retain = True
    default_lr = 5e-5

    def __init__(self, *args: Any, layer: int = 7, trainable: list[str] | None = None, steering_coeff: float = 6.5,
                 retain_weight: float = 1200.0, token_scope: str = "all", seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, retain_weight=retain_weight, **kwargs)
        if not isinstance(layer, int) or layer < 0:
            raise ValueError(f"{type(self).__name__}: `layer` must be an integer >= 0, got {layer!r}")
        checks.positive(type(self).__name__, "steering_coeff", steering_coeff)
        if token_scope not in ("all", "answer", "fact"):
            raise ValueError(f"{type(self).__name__}: `token_scope` must be 'all', 'answer' or 'fact', got "
                             f"{token_scope!r}")
        self.layer, self.trainable_patterns, self.steering_coeff = layer, trainable, float(steering_coeff)
        self.token_scope, self.seed = token_scope, seed
        self.retain_kind = "activation"
        self.original: dict[str, Tensor] = {}
        self.control: Tensor | None = None

    def configure_model(self) -> None:
        first = self.model is None or self.control is None
        super().configure_model()
        if not first:
            return
        self._check_layer()
        hidden = self.model.config.hidden_size
        g = torch.Generator().manual_seed(self.seed if self.seed is not None else global_seed())
        u = torch.rand(hidden, generator=g)
        self.control = u / u.norm()
        if self.lora is not None:
            return
        names = self._trainable_names()
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in names)
        self.original = {n: p.detach().clone() for n, p in self.model.named_parameters() if n in names}

    def _check_layer(self) -> None:
        n_layers = len(decoder_layers(self.model))
        if self.layer >= n_layers:
            raise ValueError(f"{type(self).__name__}: `layer`={self.layer} but the model has {n_layers} layers "
                             f"(0..{n_layers - 1})")

    def lora_options(self) -> dict[str, Any]:
        options = super().lora_options()
        if "target_modules" not in options:  # adapters on the layers RMU would train
            self._check_layer()
            options["target_modules"] = sorted({n.rsplit(".", 1)[0] for n in self._trainable_names()})
        return options

    def _trainable_names(self) -> set[str]:
        names = [n for n, _ in self.model.named_parameters()]
        if self.trainable_patterns:
            chosen = {n for n in names if any(re.search(p, n) for p in self.trainable_patterns)}
            if not chosen:
                raise ValueError(f"{type(self).__name__}: `trainable` patterns {self.trainable_patterns} match no "
                                 f"parameter (e.g. {names[:3]})")
            return chosen
        projections = mlp_down_projections(self.model, range(max(0, self.layer - 2), self.layer + 1))
        chosen = {f"{name}.{n}" for name, module in projections.items() for n, _ in module.named_parameters()}
        if not chosen:
            raise ValueError(f"{type(self).__name__}: no MLP down-projection ({', '.join(DOWN_PROJECTIONS)}) found in "
                             "layers l-2..l; pass `trainable` parameter-name patterns")
        return chosen

    # ---------------------------------------------------------------- activations
    def token_mask(self, batch: dict[str, Tensor]) -> Tensor:
        """The tokens whose activations count (retain side; the forget side: :meth:`forget_mask`)."""
        if self.token_scope == "answer":
            return batch["labels"] != -100
        return batch["attention_mask"].bool()

    def forget_mask(self, batch: dict[str, Tensor]) -> Tensor:
        """The forget tokens steered to ``c·u``: :meth:`token_mask`, or the fact-span tokens."""
        if self.token_scope != "fact":
            return self.token_mask(batch)
        if "fact_mask" not in batch:
            raise ValueError(f"{type(self).__name__}: `token_scope: fact` steers the forget records' fact-span "
                             "tokens, but the forget batch has none; mark them (`fact_span` on the records, or "
                             "`RWKU(name_spans=true)`) or use token_scope 'all'")
        return batch["fact_mask"] & batch["attention_mask"].bool()

    def hidden(self, batch: dict[str, Tensor]) -> Tensor:
        """Layer-ℓ activations ``[B, T, D]`` of the trained model (the forward stops at ℓ)."""
        return hidden_at(self.model, self.layer, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         use_cache=False)

    @torch.no_grad()
    def reference_hidden(self, batch: dict[str, Tensor]) -> Tensor:
        """Layer-ℓ activations of the starting model: the trained parameters swapped for their
        originals (with LoRA: the adapters disabled)."""
        inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        if self._lora_applied:
            with self.adapters_disabled():
                return hidden_at(self.model, self.layer, **inputs)

        def call(**kwargs):
            return torch.func.functional_call(self.model, self.original, args=(), kwargs=kwargs)

        return hidden_at(self.model, self.layer, call=call, input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"], use_cache=False)

    def retain_objective(self, retain: dict[str, Tensor]) -> Tensor:
        """Per-example distance of the layer-ℓ retain activations from the frozen model's."""
        return activation_distance(self.hidden(retain), self.reference_hidden(retain), self.token_mask(retain))

    def on_train_start(self) -> None:
        # Once, after the Trainer has placed and cast the model (bf16-true): originals and target follow it.
        dtype = next(self.model.parameters()).dtype
        self.original = {n: t.to(self.device, dtype) for n, t in self.original.items()}
        self.control = self.control.to(self.device)
        super().on_train_start()

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        target = self.steering_coeff * self.control
        h = self.hidden(forget)
        forget_loss = activation_distance(h, target, self.forget_mask(forget))
        return Objectives(forget=forget_loss, retain=self.retain_objective(batch["retain"]),
                          logs={"forget_activation_norm": h.detach().float().norm(dim=-1).mean()})


class SRMU(RMU):
    """Selective RMU (interpretation: no public code; the knobs follow METHODS.md).

    From the frozen model's layer-ℓ activations, kept as exponential moving averages over
    the forget and retain batches (rate ``ema``): an importance map
    ``m = normalise(|μ_f - μ_r| / (σ_r + eps))`` (mean 1) over hidden features and a
    directed misdirection vector ``v = unit(-(μ_f - μ_r))``. Forget loss:
    ``‖m ⊙ (h_ℓ(x_f) - (h_ℓ^ref(x_f) + c v))‖²``; retain as RMU. The map concentrates the
    push on the features that separate forget from retain data, and ``v`` points away
    from the forget mean rather than in a random direction.

    Args:
        ema: moving-average rate of the activation statistics (1: only the current batch).
        eps: added to σ_r.
        **kwargs: see :class:`RMU`.
    """

    forget_doc = "RMU with an activation importance map and a directed misdirection vector (interpretation)"
    retain_doc = "as RMU"
    checkpoint_state = ("stats",)

    def __init__(self, *args: Any, ema: float = 0.1, eps: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 0 < ema <= 1:
            raise ValueError(f"SRMU: `ema` must be in (0, 1], got {ema!r}")
        self.ema, self.eps = ema, eps
        self.stats: dict[str, Tensor] = {}

    @staticmethod
    def _moments(h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        m = mask.unsqueeze(-1).float()
        n = m.sum().clamp(min=1)
        mu = (h.float() * m).sum((0, 1)) / n
        var = ((h.float() - mu).square() * m).sum((0, 1)) / n
        return mu, var

    def _update_stats(self, ref_f: Tensor, mask_f: Tensor, ref_r: Tensor, mask_r: Tensor) -> None:
        mu_f, _ = self._moments(ref_f, mask_f)
        mu_r, var_r = self._moments(ref_r, mask_r)
        new = {"mu_f": mu_f, "mu_r": mu_r, "var_r": var_r}
        for k, v in new.items():
            self.stats[k] = v if k not in self.stats else (1 - self.ema) * self.stats[k].to(v) + self.ema * v

    def importance(self) -> tuple[Tensor, Tensor]:
        """``(m, v)``: the importance map (mean 1) and the misdirection unit vector, ``[D]`` each."""
        diff = self.stats["mu_f"] - self.stats["mu_r"]
        m = diff.abs() / (self.stats["var_r"].sqrt() + self.eps)
        m = m / m.mean().clamp(min=1e-12)
        v = -diff / diff.norm().clamp(min=1e-12)
        return m, v

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget, retain = batch["forget"], batch["retain"]
        mask_f, mask_r = self.forget_mask(forget), self.token_mask(retain)
        ref_f, ref_r = self.reference_hidden(forget), self.reference_hidden(retain)
        self._update_stats(ref_f, mask_f, ref_r, mask_r)
        m, v = self.importance()
        h_f = self.hidden(forget)
        forget_loss = activation_distance(h_f, ref_f + self.steering_coeff * v, mask_f, weight=m)
        retain_loss = activation_distance(self.hidden(retain), ref_r, mask_r)  # retain_objective, ref_r reused
        return Objectives(forget=forget_loss, retain=retain_loss,
                          logs={"importance_max": m.max().detach()})
