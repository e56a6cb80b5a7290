"""``NullSpaceProjection``: keep what the trained linear layers do on the retain data, exactly,
by confining each weight's change to the null space of the retain inputs (AlphaEdit's
constraint, applied after every optimizer step)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from lit_unlearn import checks


def principal_basis(cov: Tensor, energy: float) -> Tensor:
    """``U`` ``[d, k]``: the fewest top eigenvectors of ``cov`` (``[d, d]``, symmetric PSD) whose
    eigenvalues hold at least ``energy`` of its trace (``k = 0`` for ``energy`` 0). ``x - x U Uᵀ``
    drops the part of ``x`` in their span."""
    values, vectors = torch.linalg.eigh(cov.double())
    values, vectors = values.flip(0).clamp(min=0), vectors.flip(1)
    total = float(values.sum())
    if energy <= 0 or total == 0:
        return vectors[:, :0].to(cov.dtype)
    k = min(int((values.cumsum(0) < energy * total).sum()) + 1, len(values))
    return vectors[:, :k].to(cov.dtype)


class NullSpaceProjection(Callback):
    """Confines the change of every trained ``nn.Linear`` weight to the null space of its inputs
    on the retain data, so that the layer's outputs there stay as they were.

    At the start of training each such layer's inputs on the retain set (non-padding tokens,
    start model) give the uncentred second moment ``C = Σ x xᵀ`` (``[d_in, d_in]``); ``U``
    holds its fewest top eigenvectors with ``energy`` of the trace. After every optimizer step
    the weight is reset to ``W₀ + (W - W₀)(I - U Uᵀ)`` (in float32): for any input ``x`` in the
    span of ``U``, ``W x = W₀ x``, whatever the optimizer did. This is the null-space constraint
    of AlphaEdit (Fang et al., 2025), here for any method and optimizer; the method's own retain
    loss still acts on what the projection leaves (the tail of the spectrum, and layers after
    the trained ones). Suits methods that train a few full linear layers (``RMU``'s MLP
    down-projections). Every optimized parameter must be such a weight: biases, norms,
    embeddings and LoRA adapters change outputs whatever the input, so they are refused, and
    so are sharded strategies (FSDP, DeepSpeed, model parallel). Under bf16-true weights the
    rounding of each step is not confined.

    Args:
        energy: share of the retain inputs' second moment whose subspace is frozen, in [0, 1).
            Higher protects more and leaves the forget update fewer directions.
        max_batches: retain batches read (per process) for the second moment (None: all).

    Prints and logs (``nullspace/frozen_dims``, the mean ``k``) the frozen directions.
    ``state_dict`` holds the start weights and bases, so a resumed run keeps the same constraint.
    """

    def __init__(self, energy: float = 0.99, max_batches: int | None = None) -> None:
        if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 <= energy < 1:
            raise ValueError(f"NullSpaceProjection: `energy` must be a number in [0, 1), got {energy!r}")
        if max_batches is not None:
            checks.positive_int("NullSpaceProjection", "max_batches", max_batches)
        self.energy, self.max_batches = float(energy), max_batches
        self.reference: dict[str, Tensor] = {}
        self.bases: dict[str, Tensor] = {}
        self._layers: dict[str, nn.Linear] = {}
        self._restored = False
        self._handle = None

    @property
    def frozen_dims(self) -> dict[str, int]:
        """Frozen input directions ``k`` per layer."""
        return {n: u.shape[1] for n, u in self.bases.items()}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy

        if isinstance(trainer.strategy, (FSDPStrategy, DeepSpeedStrategy, ModelParallelStrategy)):
            raise ValueError(f"NullSpaceProjection: the {type(trainer.strategy).__name__} shards the weights it "
                             "projects; use one device or DDP")
        retain = getattr(trainer.datamodule, "retain_records", None) if trainer.datamodule is not None else None
        if retain is None:
            raise checks.incompatible("NullSpaceProjection", pl_module, "the datamodule has no retain set, and the "
                                      "null space is taken from the retain data's inputs to the trained layers")

    def trained_layers(self, pl_module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, nn.Linear]:
        """The ``nn.Linear`` modules whose weights ``optimizer`` trains; refuses any other trained parameter."""
        trained = {id(p) for group in optimizer.param_groups for p in group["params"] if p.requires_grad}
        layers, handled = {}, set()
        for name, module in pl_module.named_modules():
            if isinstance(module, nn.Linear) and "lora_" not in name and id(module.weight) in trained:
                layers[name] = module
                handled.add(id(module.weight))
        other = [n for n, p in pl_module.named_parameters() if id(p) in trained - handled]
        if other:
            raise checks.incompatible("NullSpaceProjection", pl_module, f"the optimizer also trains {other[:4]}"
                                      f"{' ...' if len(other) > 4 else ''}, which are not full nn.Linear weights (a "
                                      "bias, norm, embedding or LoRA adapter changes outputs whatever the input); "
                                      "train only linear weights (e.g. RMU's `trainable` patterns)")
        if not layers:
            raise checks.incompatible("NullSpaceProjection", pl_module, "its optimizer trains no nn.Linear weight")
        return layers

    @torch.no_grad()
    def _second_moments(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Tensor]:
        from lit_unlearn.models import StopForward

        dm = trainer.datamodule
        cov = {n: torch.zeros(m.in_features, m.in_features, device=pl_module.device, dtype=torch.float32)
               for n, m in self._layers.items()}
        mask: dict[str, Tensor] = {}
        seen: set[str] = set()

        def hook(name):
            def add(module, args, kwargs):
                x = (args[0] if args else kwargs["input"]).detach().float()
                x = x[mask["m"]]
                cov[name].addmm_(x.T, x)
                seen.add(name)
                if len(seen) == len(cov):  # every trained layer has its inputs: the rest is not needed
                    raise StopForward
            return add

        handles = [m.register_forward_pre_hook(hook(n), with_kwargs=True) for n, m in self._layers.items()]
        was_training = pl_module.training
        pl_module.eval()
        try:
            for i, batch in enumerate(dm.eval_dataloader(dm.retain_set)):
                if self.max_batches is not None and i >= self.max_batches:
                    break
                ids = batch["input_ids"].to(pl_module.device)
                attention = batch["attention_mask"].to(pl_module.device)
                mask["m"] = attention.bool()
                seen.clear()
                try:
                    with trainer.precision_plugin.forward_context():
                        pl_module.model(input_ids=ids, attention_mask=attention, use_cache=False)
                except StopForward:
                    pass
        finally:
            for h in handles:
                h.remove()
            pl_module.train(was_training)
        return {n: trainer.strategy.reduce(c, reduce_op="sum") for n, c in cov.items()}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise checks.incompatible("NullSpaceProjection", pl_module, f"it needs exactly one optimizer, got "
                                      f"{len(trainer.optimizers)}")
        optimizer = trainer.optimizers[0]
        self._layers = self.trained_layers(pl_module, optimizer)
        if not self._restored:  # a resumed run brings its bases and start weights in its state_dict
            moments = self._second_moments(trainer, pl_module)
            self.bases = {n: principal_basis(c, self.energy) for n, c in moments.items()}
            self.reference = {n: m.weight.detach().float().clone() for n, m in self._layers.items()}
        missing = sorted(set(self._layers) - set(self.bases))
        if missing:
            raise checks.incompatible("NullSpaceProjection", pl_module,
                                      f"the restored state has no basis for {missing}")
        for name, module in self._layers.items():
            device = module.weight.device
            self.bases[name] = self.bases[name].to(device, torch.float32)
            self.reference[name] = self.reference[name].to(device, torch.float32)
        if trainer.is_global_zero:
            dims = ", ".join(f"{n} {k}/{self._layers[n].in_features}" for n, k in self.frozen_dims.items())
            print(f"lit-unlearn: NullSpaceProjection: input directions frozen ({self.energy:.0%} of the retain "
                  f"inputs' second moment): {dims}", flush=True)
        self._handle = optimizer.register_step_post_hook(lambda *_: self.project())
        pl_module.log("nullspace/frozen_dims", sum(self.frozen_dims.values()) / len(self.frozen_dims),
                      rank_zero_only=True)

    @torch.no_grad()
    def project(self) -> None:
        """``W ← W₀ + (W - W₀)(I - U Uᵀ)`` for every trained layer, in float32 (idempotent)."""
        for name, module in self._layers.items():
            w0, u = self.reference[name], self.bases[name]
            delta = module.weight.float() - w0
            module.weight.copy_(w0 + delta - (delta @ u) @ u.T)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._restored = False

    def state_dict(self) -> dict[str, Any]:
        return {"energy": self.energy, "reference": {n: t.cpu() for n, t in self.reference.items()},
                "bases": {n: t.cpu() for n, t in self.bases.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["energy"] != self.energy:
            warnings.warn(f"NullSpaceProjection: the checkpoint's bases were taken at energy {state_dict['energy']}, "
                          f"not {self.energy}; the resumed run keeps them", stacklevel=2)
        self.reference, self.bases = dict(state_dict["reference"]), dict(state_dict["bases"])
        self._restored = True
