"""``NullSpaceProjection``: keep what the trained linear layers do on the retain data, exactly,
by confining each weight's change to the null space of the retain inputs (AlphaEdit's
constraint, applied after every optimizer step)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from lit_unlearn import checks


def principal_projector(cov: Tensor, energy: float) -> tuple[Tensor, int]:
    """``(P, k)``: ``P = I - U Uᵀ`` for ``U`` the fewest top eigenvectors of ``cov`` (``[d, d]``,
    symmetric PSD) whose eigenvalues hold at least ``energy`` of its trace; ``x P`` drops the part
    of ``x`` in that subspace. ``energy`` 0 gives ``k = 0`` and ``P = I``."""
    values, vectors = torch.linalg.eigh(cov.double())
    values, vectors = values.flip(0).clamp(min=0), vectors.flip(1)
    total = float(values.sum())
    if energy <= 0 or total == 0:
        return torch.eye(len(cov), dtype=cov.dtype, device=cov.device), 0
    k = int((values.cumsum(0) < energy * total).sum()) + 1
    k = min(k, len(values))
    u = vectors[:, :k]
    return (torch.eye(len(cov), dtype=torch.float64, device=cov.device) - u @ u.T).to(cov.dtype), k


class NullSpaceProjection(Callback):
    """Confines the change of every trained ``nn.Linear`` weight to the null space of its inputs
    on the retain data, so that the layer's outputs there stay as they were.

    At the start of training each such layer's inputs on the retain set (non-padding tokens,
    start model) give the uncentred covariance ``C = Σ x xᵀ`` (``[d_in, d_in]``); ``U`` holds its
    fewest top eigenvectors with ``energy`` of the trace, and ``P = I - U Uᵀ``. After every
    optimizer step the weight is reset to ``W₀ + (W - W₀) P``: for any input ``x`` in the span of
    ``U``, ``W x = W₀ x`` exactly, whatever the optimizer did. This is the null-space constraint of
    AlphaEdit (Fang et al., 2025), here for any method and optimizer; the method's own retain loss
    still acts on what the projection leaves (the tail of the spectrum, and layers after the
    trained ones). Suits methods that train a few full linear layers (``RMU``'s MLP
    down-projections); biases that train and LoRA adapters are refused (their change cannot be
    confined to a subspace of the inputs), and so are sharded strategies (FSDP, DeepSpeed).

    Args:
        energy: share of the retain inputs' second moment whose subspace is frozen, in [0, 1).
            Higher protects more and leaves the forget update fewer directions.
        max_batches: retain batches read for the covariance (None: the whole retain set).

    Logs ``nullspace/frozen_dims`` (mean ``k`` over the layers) once. ``state_dict`` holds the
    start weights and projectors, so a resumed run keeps the same constraint.
    """

    def __init__(self, energy: float = 0.99, max_batches: int | None = None) -> None:
        if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 <= energy < 1:
            raise ValueError(f"NullSpaceProjection: `energy` must be a number in [0, 1), got {energy!r}")
        if max_batches is not None:
            checks.positive_int("NullSpaceProjection", "max_batches", max_batches)
        self.energy, self.max_batches = float(energy), max_batches
        self.reference: dict[str, Tensor] = {}
        self.projectors: dict[str, Tensor] = {}
        self.frozen_dims: dict[str, int] = {}
        self._layers: dict[str, nn.Linear] = {}
        self._handle = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

        if isinstance(trainer.strategy, (FSDPStrategy, DeepSpeedStrategy)):
            raise ValueError(f"NullSpaceProjection: the {type(trainer.strategy).__name__} shards the weights it "
                             "projects; use one device or DDP")
        retain = getattr(trainer.datamodule, "retain_records", None) if trainer.datamodule is not None else None
        if retain is None:
            raise ValueError("NullSpaceProjection: the datamodule has no retain set; the null space is taken from "
                             "the retain data's inputs to the trained layers")

    def _trained_layers(self, pl_module: LightningModule) -> dict[str, nn.Linear]:
        layers = {}
        for name, module in pl_module.named_modules():
            if "lora_" in name and any(p.requires_grad for p in module.parameters(recurse=False)):
                raise ValueError(f"NullSpaceProjection: {name} is a LoRA adapter; the projection confines full "
                                 "linear weights (train them without LoRA)")
            if isinstance(module, nn.Linear) and module.weight.requires_grad:
                if module.bias is not None and module.bias.requires_grad:
                    raise ValueError(f"NullSpaceProjection: {name}.bias trains, and a bias changes the output for "
                                     "every input; freeze it (the method's `trainable` patterns)")
                layers[name] = module
        if not layers:
            raise ValueError(f"NullSpaceProjection: {type(pl_module).__name__} trains no nn.Linear weight")
        return layers

    @torch.no_grad()
    def _covariances(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Tensor]:
        dm = trainer.datamodule
        cov = {n: torch.zeros(m.in_features, m.in_features, device=pl_module.device, dtype=torch.float32)
               for n, m in self._layers.items()}
        mask: dict[str, Tensor] = {}

        def hook(name):
            def add(module, args):
                x = args[0].detach().float()
                x = x[mask["m"]] if x.dim() == 3 else x.reshape(-1, x.shape[-1])
                cov[name].addmm_(x.T, x)
            return add

        handles = [m.register_forward_pre_hook(hook(n)) for n, m in self._layers.items()]
        was_training = pl_module.training
        pl_module.eval()
        try:
            for i, batch in enumerate(dm.eval_dataloader(dm.retain_set)):
                if self.max_batches is not None and i >= self.max_batches:
                    break
                ids = batch["input_ids"].to(pl_module.device)
                attention = batch["attention_mask"].to(pl_module.device)
                mask["m"] = attention.bool()
                pl_module.model(input_ids=ids, attention_mask=attention)
        finally:
            for h in handles:
                h.remove()
            pl_module.train(was_training)
        return {n: trainer.strategy.reduce(c, reduce_op="sum") for n, c in cov.items()}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._layers = self._trained_layers(pl_module)
        if not self.projectors:  # a resumed run brings them in its state_dict
            for name, cov in self._covariances(trainer, pl_module).items():
                p, k = principal_projector(cov, self.energy)
                self.projectors[name], self.frozen_dims[name] = p, k
                self.reference[name] = self._layers[name].weight.detach().clone()
            if trainer.is_global_zero:
                dims = ", ".join(f"{n} {k}/{self._layers[n].in_features}" for n, k in self.frozen_dims.items())
                print(f"lit-unlearn: NullSpaceProjection: input directions frozen ({self.energy:.0%} of the retain "
                      f"inputs' second moment): {dims}", flush=True)
        missing = sorted(set(self._layers) - set(self.projectors))
        if missing:
            raise ValueError(f"NullSpaceProjection: the restored state has no projector for {missing}")
        for name in self._layers:
            w = self._layers[name].weight
            self.projectors[name] = self.projectors[name].to(w.device, w.dtype)
            self.reference[name] = self.reference[name].to(w.device, w.dtype)
        self._handle = trainer.optimizers[0].register_step_post_hook(lambda *_: self.project())
        pl_module.log("nullspace/frozen_dims", sum(self.frozen_dims.values()) / len(self.frozen_dims),
                      rank_zero_only=True)

    @torch.no_grad()
    def project(self) -> None:
        """``W ← W₀ + (W - W₀) P`` for every trained layer (idempotent)."""
        for name, module in self._layers.items():
            w0 = self.reference[name]
            module.weight.copy_(w0 + (module.weight - w0) @ self.projectors[name])

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def state_dict(self) -> dict[str, Any]:
        return {"energy": self.energy, "reference": {n: t.cpu() for n, t in self.reference.items()},
                "projectors": {n: t.cpu() for n, t in self.projectors.items()}, "frozen_dims": dict(self.frozen_dims)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reference, self.projectors = dict(state_dict["reference"]), dict(state_dict["projectors"])
        self.frozen_dims = dict(state_dict["frozen_dims"])
