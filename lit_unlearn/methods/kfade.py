"""``KFADE``: a few uphill Gauss-Newton steps on the forget loss, with retain curvature from K-FAC.

Interpretation (no public code; the knobs follow METHODS.md). For every chosen linear layer
``y = W x`` the retain Fisher block is approximated as ``A ⊗ S`` with ``A = E[x xᵀ]`` (layer
inputs) and ``S = E[s sᵀ]`` (gradients of the log-likelihood at the layer output, labels
sampled from the model's own distribution), over non-padding tokens of retain data. One
K-FADE step is ``Δ = η (A ⊗ S + δ)⁻¹ ∇L_f``, applied per layer in the Kronecker eigenbasis
(``Δ = Q_S [(Q_Sᵀ G Q_A) / (λ_S λ_Aᵀ + δ)] Q_Aᵀ``) with damping ``δ = damping × mean
eigenvalue`` and ``η`` from the trust region ``½ Δᵀ (A ⊗ S + δ) Δ = κ``. The step goes uphill
on the forget NLL while moving least along directions the retain data is sensitive to.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lit_unlearn import checks
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.models import mlp_down_projections
from lit_unlearn.objectives import IGNORE_INDEX, nll

UPDATE_FILE = "kfade_update.safetensors"  # in the saved model directory

# ---------------------------------------------------------------------------- functional core


def sample_labels(logits: Tensor, attention_mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Labels drawn from the model's own next-token distribution (the true Fisher), ``[B, T]``;
    position ``t + 1`` holds a sample of ``p(· | x_≤t)``; padding and position 0 are ``-100``."""
    probs = torch.softmax(logits[:, :-1].float(), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1]).cpu()
    drawn = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:2]).to(logits.device)
    labels = torch.full(attention_mask.shape, IGNORE_INDEX, dtype=torch.long, device=logits.device)
    labels[:, 1:] = torch.where(attention_mask[:, 1:].bool(), drawn, IGNORE_INDEX)
    return labels


@torch.enable_grad()
def collect_factors(model: nn.Module, modules: dict[str, nn.Linear], batches: Iterable[dict[str, Tensor]],
                    labels_fn=None, device: str | torch.device | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """K-FAC factors ``(A, S)`` per module name, averaged over the attended tokens of ``batches``.

    Args:
        model: the causal LM.
        modules: name -> ``nn.Linear`` to collect for.
        batches: ``TokenBatch`` dicts (``input_ids``, ``attention_mask``).
        labels_fn: ``(logits, batch) -> labels``; default samples from the model (true Fisher).
        device: where to keep the factors (``"cpu"`` saves accelerator memory).

    Returns:
        ``{name: (A [in, in], S [out, out])}`` in float32: ``A = mean_t x_t x_tᵀ`` and
        ``S = mean_t s_t s_tᵀ`` with ``s_t`` the gradient of the summed log-likelihood of the
        labels at the layer's output at token t.
    """
    inputs: dict[str, Tensor] = {}
    grads: dict[str, Tensor] = {}
    sums: dict[str, list] = {n: [0.0, 0.0] for n in modules}
    handles = []
    for name, module in modules.items():
        handles.append(module.register_forward_hook(
            lambda m, a, out, name=name: inputs.__setitem__(name, a[0].detach())))
        handles.append(module.register_full_backward_hook(
            lambda m, gin, gout, name=name: grads.__setitem__(name, gout[0].detach())))
    count = 0
    try:
        for batch in batches:
            mask = batch["attention_mask"].bool()
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
            labels = labels_fn(logits, batch) if labels_fn else sample_labels(logits.detach(), batch["attention_mask"])
            # summed (not averaged) log-likelihood, so each token's output gradient is its own s_t
            loss = nll(logits, labels, normalize=False).sum()
            model.zero_grad(set_to_none=True)
            loss.backward()
            for name in modules:
                x, s = inputs[name][mask].float(), grads[name][mask].float()
                A, S = x.T @ x, s.T @ s
                if device is not None:
                    A, S = A.to(device), S.to(device)
                sums[name][0] = sums[name][0] + A
                sums[name][1] = sums[name][1] + S
            count += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return {n: (a / count, s / count) for n, (a, s) in sums.items()}


def eigenbasis(A: Tensor, S: Tensor) -> dict[str, Tensor]:
    """Eigendecompositions of the two factors (float64), computed once per layer."""
    la, qa = torch.linalg.eigh(A.double())
    ls, qs = torch.linalg.eigh(S.double())
    return {"la": la.clamp(min=0), "qa": qa, "ls": ls.clamp(min=0), "qs": qs}


def precondition(grad: Tensor, basis: dict[str, Tensor], damping: float) -> tuple[Tensor, float]:
    """``(A ⊗ S + δ I)⁻¹ vec(G)`` for a weight gradient ``G [out, in]``, via the eigenbasis.

    ``δ = damping × mean(λ_S) × mean(λ_A)`` (the mean eigenvalue of ``A ⊗ S``). Returns the
    preconditioned gradient (same shape as ``G``) and δ.
    """
    qa, qs, la, ls = basis["qa"], basis["qs"], basis["la"], basis["ls"]
    delta = damping * float(la.mean() * ls.mean())
    g = grad.double().to(qa.device)
    rotated = qs.T @ g @ qa
    rotated = rotated / (ls[:, None] * la[None, :] + delta)
    return (qs @ rotated @ qa.T).to(grad.dtype).to(grad.device), delta


# ---------------------------------------------------------------------------- the method


class KFADE(UnlearningModule):
    """K-FADE (interpretation): Gauss-Newton steps up the forget loss with K-FAC retain curvature.

    At the start of fit the K-FAC factors of the chosen linear layers are collected on up to
    ``factor_examples`` retain rows (reported as ``kfade/factor_seconds``) and their
    eigenbases computed once. Each epoch then accumulates the forget NLL gradient over the
    forget set and takes one step ``Δ = η (A ⊗ S + δ)⁻¹ ∇L_f`` on the chosen weights, with η
    from the trust region ``½ Δᵀ (A ⊗ S + δ) Δ = κ``; after ``steps`` steps training stops.
    The summed update is saved as ``kfade_update.safetensors`` in the saved model and can be
    added to another copy of the model with :meth:`KFADE.apply_update`. Uses manual
    optimization: the prepared Δ is executed by SGD with learning rate 1 at the last batch of
    each epoch, so Lightning counts the steps; logs like the others.

    Args:
        steps: Gauss-Newton steps (1..10).
        trust_region: κ.
        damping: δ as a fraction of the mean eigenvalue (0.1).
        layers: regexes over module names of ``nn.Linear`` layers; default the MLP
            down-projections of every decoder layer.
        factor_examples: retain rows for the factors.
        factor_device: ``"cpu"`` keeps factors off the accelerator; None keeps them with the model.
        seed: seed of the sampled labels.
        **kwargs: see :class:`UnlearningModule`.
    """

    forget_doc = "uphill Gauss-Newton steps on the forget NLL, K-FAC retain curvature, trust region (interpretation)"
    retain_doc = "curvature only"

    supports_lora = False  # edits full-precision base weights
    requires_retain = True
    uses_sample_weights = False  # one Gauss-Newton step per pass over the forget set
    checkpoint_state = ("bases", "update", "steps_taken")

    def __init__(self, *args: Any, steps: int = 3, trust_region: float = 1e-3, damping: float = 0.1,
                 layers: list[str] | None = None, factor_examples: int = 256, factor_device: str | None = "cpu",
                 seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        checks.positive_int("KFADE", "steps", steps)
        checks.positive_int("KFADE", "factor_examples", factor_examples)
        checks.positive("KFADE", "trust_region", trust_region)
        checks.positive("KFADE", "damping", damping)
        self.automatic_optimization = False
        self.retain_kind = None  # retain data gives the curvature; the objective has no retain term
        self.steps, self.trust_region, self.damping = steps, trust_region, damping
        self.layer_patterns, self.factor_examples = layers, factor_examples
        self.factor_device, self.seed = factor_device, seed
        self.bases: dict[str, dict[str, Tensor]] = {}
        self.update: dict[str, Tensor] = {}
        self.steps_taken = 0
        self._batches = 0

    def configure_optimizers(self):
        # Plain SGD with lr 1 executes a prepared Δ (written as -grad), so Lightning counts the steps.
        return torch.optim.SGD([m.weight for m in self.target_modules().values()], lr=1.0)

    def target_modules(self) -> dict[str, nn.Linear]:
        linear = {n: m for n, m in self.model.named_modules() if isinstance(m, nn.Linear)}
        if self.layer_patterns:
            chosen = {n: m for n, m in linear.items() if any(re.search(p, n) for p in self.layer_patterns)}
        else:
            chosen = {n: m for n, m in mlp_down_projections(self.model).items() if isinstance(m, nn.Linear)}
        if not chosen:
            raise ValueError(f"KFADE: no nn.Linear layer matches {self.layer_patterns or 'the MLP down-projections'}")
        return chosen

    def on_train_start(self) -> None:
        super().on_train_start()
        modules = self.target_modules()
        for p in self.model.parameters():
            p.requires_grad_(False)
        for m in modules.values():
            m.weight.requires_grad_(True)
        if self.bases:
            return
        dm = self._datamodule()
        data = dm.retain_set
        rows = torch.utils.data.Subset(data, range(min(len(data), self.factor_examples)))
        g = torch.Generator().manual_seed(self.seed)
        started = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        with self.trainer.precision_plugin.forward_context():
            factors = collect_factors(
                self.model, modules, ({k: v.to(self.device) for k, v in b.items()} for b in
                                      dm.eval_dataloader(rows, shard=False)),
                labels_fn=lambda logits, batch: sample_labels(logits.detach(), batch["attention_mask"], g),
                device=self.factor_device)
        self.model.train(was_training)
        self.bases = {n: eigenbasis(a, s) for n, (a, s) in factors.items()}
        seconds = time.perf_counter() - started
        self.factor_seconds = seconds
        rank_zero_info(f"KFADE: K-FAC factors of {len(modules)} layers on {len(rows)} retain rows in {seconds:.1f} s")
        for logger in self.loggers:
            logger.log_metrics({"kfade/factor_seconds": seconds}, step=0)

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        forget = batch["forget"]
        return Objectives(forget=nll(self(forget), forget["labels"]))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        obj = self.objectives(batch)
        self.last_objectives = obj
        loss = obj.forget.mean()
        self.last_loss = loss.detach()
        self.manual_backward(loss)  # gradients of the forget NLL accumulate over the epoch
        self._batches += 1
        if self.should_log():  # the forget NLL, which K-FADE's steps go up
            self.log("train/loss", loss.detach(), prog_bar=True)
        if self.trainer.is_last_batch:
            self.gauss_newton_step()
        return loss.detach()

    @torch.no_grad()
    def gauss_newton_step(self) -> None:
        """One trust-region step up the forget NLL, from the gradient accumulated since the last."""
        modules = self.target_modules()
        directions, quad = {}, 0.0
        for name, module in modules.items():
            grad = self.trainer.strategy.reduce(module.weight.grad / self._batches, reduce_op="mean")
            step, _ = precondition(grad, self.bases[name], self.damping)
            directions[name] = step
            quad += float((grad.double() * step.double()).sum())  # gᵀ (A⊗S + δ)⁻¹ g
        eta = (2 * self.trust_region / max(quad, 1e-30)) ** 0.5
        deltas = {name: eta * directions[name] for name in modules}
        for name, module in modules.items():
            module.weight.grad = -deltas[name].to(module.weight.dtype)  # SGD(lr=1) adds delta: uphill
        optimizer = self.optimizers()
        optimizer.step()
        applied = all(m.weight.grad is not None for m in modules.values())  # a DivergenceGuard may drop it
        optimizer.zero_grad()
        if not applied:
            self._batches = 0
            return
        for name, delta in deltas.items():
            self.update[name] = self.update.get(name, torch.zeros_like(delta)).to(delta.device) + delta.detach()
        self.steps_taken += 1
        self._batches = 0
        self.log_dict({"kfade/eta": eta, "kfade/natural_grad_norm2": quad})
        if self.steps_taken >= self.steps:
            self.trainer.should_stop = True

    # ---------------------------------------------------------------- the update
    def write_pretrained(self, directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """The model, plus the summed update as ``kfade_update.safetensors`` (see :meth:`apply_update`)."""
        super().write_pretrained(directory, state_dict)
        if self.update:
            save_file({f"{n}.weight": t.float().cpu().contiguous() for n, t in self.update.items()},
                      str(Path(directory) / UPDATE_FILE))

    @staticmethod
    @torch.no_grad()
    def apply_update(model: nn.Module, path: str, scale: float = 1.0) -> nn.Module:
        """Add a saved K-FADE update (``kfade_update.safetensors``) to ``model``'s weights."""
        update = load_file(path)
        params = dict(model.named_parameters())
        missing = [k for k in update if k not in params]
        if missing:
            raise KeyError(f"KFADE.apply_update: {path} updates parameters the model lacks: {missing[:3]}")
        for name, delta in update.items():
            params[name].add_(scale * delta.to(params[name]))
        return model
