"""``GradientProjection`` (geometric-disentanglement unlearning): remove from the forget update
its component in the span of the retain gradients."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from lit_unlearn import checks


def orthonormal_basis(vectors: list[Tensor], weight: Tensor | None = None, rtol: float = 1e-6) -> list[Tensor]:
    """Orthonormalise ``vectors`` (Gram-Schmidt, twice) under ``⟨a, b⟩ = Σ a b w``.

    Vectors whose residual norm is below ``rtol`` times the largest input norm are dropped.
    """
    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b * weight).sum() if weight is not None else a @ b

    largest = max((dot(v, v).sqrt() for v in vectors), default=torch.tensor(0.0))
    basis: list[Tensor] = []
    for v in vectors:
        v = v.clone()
        for _ in range(2):
            for q in basis:
                v -= dot(v, q) * q
        norm = dot(v, v).sqrt()
        if norm > rtol * largest and norm > 0:
            basis.append(v / norm)
    return basis


def project_out(vector: Tensor, basis: list[Tensor], weight: Tensor | None = None) -> Tensor:
    """``v - Σ ⟨v, q⟩ q`` for an orthonormal ``basis`` under the same inner product."""
    out = vector.clone()
    for q in basis:
        out -= ((out * q * weight).sum() if weight is not None else out @ q) * q
    return out


class GradientProjection(Callback):
    """Executes only the part of the forget update orthogonal to ``k`` retain gradients.

    Per optimizer step: the module's per-example retain losses are split into ``k`` chunks;
    in ``on_before_backward`` each chunk's gradient is taken with ``torch.autograd.grad``
    (summed over accumulated micro-batches, then averaged across ranks, since autograd.grad
    bypasses DDP's hooks). The module's loss carries the retain term detached
    (``retain_grad_external``), so Lightning's backward computes only the forget gradient
    and no retain backward runs twice. In ``on_before_optimizer_step`` (gradients unscaled,
    accumulated and synced, before clipping) that forget gradient is projected onto the
    orthogonal complement of the span of the chunk gradients and written back as
    ``g_f⊥ + α g_r``, so the retain descent stays whole and, to first order, the forget
    update no longer changes the retain loss. Another callback editing gradients in
    ``on_before_optimizer_step`` before this one sees the forget gradient only.

    Args:
        k: retain chunks (basis size, at most the retain batch size; <= 4 is typical).
        metric: ``"euclidean"`` or ``"adam"`` (inner product weighted by Adam's
            ``1 / (sqrt(v̂) + eps)``; needs ``betas[0] == 0`` and no weight decay; the first
            step is Euclidean).
        rtol: drop basis vectors whose Gram-Schmidt residual is below ``rtol`` x the largest norm.
        keep_last: keep the last step's flattened vectors in ``self.last`` (for inspection).

    Logs ``gp/cos_forget_retain`` (cosine of the raw forget and retain gradients) and
    ``gp/removed_fraction`` (``1 - |g_f⊥|² / |g_f|²``). Memory: ``k + 3`` copies of the
    trainable parameters' gradients.
    """

    def __init__(self, k: int = 1, metric: str = "euclidean", rtol: float = 1e-6, keep_last: bool = False) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"GradientProjection: `k` must be an integer >= 1, got {k!r}")
        if metric not in ("euclidean", "adam"):
            raise ValueError(f"GradientProjection: `metric` must be 'euclidean' or 'adam', got {metric!r}")
        if not 0 <= rtol < 1:
            raise ValueError(f"GradientProjection: `rtol` must be in [0, 1), got {rtol!r}")
        self.k, self.metric, self.rtol, self.keep_last = k, metric, rtol, keep_last
        self._params: list[torch.nn.Parameter] = []
        self._chunks: list[Tensor] | None = None
        self._retain: Tensor | None = None
        self._logs: dict[str, float] = {}
        self.last: dict[str, Any] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        checks.only_one(self, trainer, pl_module, "the parameters' gradients")
        checks.needs_retain_term("GradientProjection", pl_module, "it projects the forget gradient against the "
                                 "retain gradients")
        if not pl_module.automatic_optimization:
            raise checks.incompatible("GradientProjection", pl_module, "the method uses manual optimization")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        self._params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        pl_module.retain_grad_external = True
        if self.metric == "adam":
            for group in optimizer.param_groups:
                beta1 = group.get("betas", (None,))[0]
                if beta1 != 0 or group.get("weight_decay", 0) != 0:
                    raise checks.incompatible("GradientProjection(metric='adam')", pl_module, "it needs an Adam-type "
                                              "optimizer with betas[0] = 0 "
                                     f"and weight_decay = 0; got betas={group.get('betas')}, "
                                     f"weight_decay={group.get('weight_decay')}")

    def _flat(self, grads) -> Tensor:
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                          for g, p in zip(grads, self._params)])

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        obj = pl_module.last_objectives
        if obj is None or obj.retain is None:
            raise RuntimeError(f"GradientProjection: {type(pl_module).__name__} returned no retain loss at step "
                               f"{trainer.global_step} (every batch needs retain rows)")
        scale = 1.0 / trainer.accumulate_grad_batches
        chunks = torch.tensor_split(obj.retain, min(self.k, len(obj.retain)))
        n = len(obj.retain)
        if self._chunks is None:
            self._chunks = []
        self._chunks += [None] * (len(chunks) - len(self._chunks))
        for c, chunk in enumerate(chunks):
            # each chunk's share of the retain term, so that the chunks sum to g_r exactly and g_r
            # stays in their span even when micro-batches split into chunks of different sizes;
            # the main backward does not need the retain graph, so the last call frees it
            keep = c < len(chunks) - 1
            flat = self._flat(torch.autograd.grad(chunk.mean(), self._params, retain_graph=keep, allow_unused=True))
            flat *= scale * len(chunk) / n
            self._chunks[c] = flat if self._chunks[c] is None else self._chunks[c] + flat
            part = flat * pl_module.retain_weight
            self._retain = part if self._retain is None else self._retain + part

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        if self._retain is None:
            return
        reduce = trainer.strategy.reduce
        retain = reduce(self._retain, reduce_op="mean")
        chunks = [reduce(c, reduce_op="mean") for c in self._chunks if c is not None]
        weight = self._adam_weight(optimizer) if self.metric == "adam" else None
        basis = orthonormal_basis(chunks, weight, self.rtol)
        update = self._flat([p.grad for p in self._params])  # the forget gradient (the retain term was detached)
        forget = update.clone() if self.keep_last else None
        f_norm2, f_dot_r = update @ update, update @ retain
        for q in basis:
            coef = (update * q * weight).sum() if weight is not None else update @ q
            update.sub_(q, alpha=float(coef))
        p_norm2 = update @ update
        projected = update.clone() if self.keep_last else None
        update += retain
        offset = 0
        for p in self._params:
            n = p.numel()
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(update[offset : offset + n].view_as(p.grad))
            offset += n
        self._logs = {"gp/cos_forget_retain": float(f_dot_r / (f_norm2.sqrt() * retain.norm()).clamp(min=1e-30)),
                      "gp/removed_fraction": float(1 - p_norm2 / f_norm2.clamp(min=1e-30))}
        if self.keep_last:
            self.last = {"forget": forget, "projected": projected, "retain": retain, "basis": basis,
                         "chunks": chunks, "weight": weight}
        self._chunks, self._retain = None, None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.retain_grad_external = False

    def _adam_weight(self, optimizer) -> Tensor | None:
        """``1 / (sqrt(v̂) + eps)`` per parameter, or None before the optimizer's first step."""
        parts = []
        for group in optimizer.param_groups:
            beta2, eps = group["betas"][1], group["eps"]
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                state = optimizer.state.get(p, {})
                if "exp_avg_sq" not in state:
                    return None
                step = float(state["step"])
                v_hat = state["exp_avg_sq"].float() / (1 - beta2**step)
                parts.append((1.0 / (v_hat.sqrt() + eps)).reshape(-1))
        return torch.cat(parts)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._logs and getattr(pl_module, "should_log", lambda: True)():
            pl_module.log_dict(self._logs)
