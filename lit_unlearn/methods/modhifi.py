"""``ModHiFi``: gradient-free unlearning by removing the components whose local reconstruction is
specific to the forget data (ModHiFi-U, interpretation for causal language models).

The paper (Kashyap et al., "ModHiFi: Identifying High Fidelity predictive components for Model
Modification", NeurIPS 2025) scores the components of a layer by *Subset Fidelity*: how well a
subset of a layer's components alone reconstructs the layer's output, measured with forward
passes only (no labels, no loss, no gradient). It shows that the global error is linearly bounded
by the local reconstruction errors, and that with uncorrelated components ranking the singletons
by their fidelity is optimal. ModHiFi-U removes the components that are high-fidelity for the
class to forget (image classifiers). There is no LLM version, and the paper's exact formulas
were not available to us (its abstract and summaries only): what follows is our reading.

Interpretation for an LLM. A *component* is an input unit of a linear output projection:

- ``components="neurons"``: MLP neuron ``i`` of a decoder layer, the ``i``-th intermediate unit
  feeding the MLP down-projection ``W ∈ R^{D×I}`` (``down_proj``; ``c_proj``/``fc2``/... in other
  architectures). Removing it zeroes column ``W[:, i]``.
- ``components="heads"``: attention head ``h``, the ``head_dim`` input columns of the attention
  output projection (``o_proj``) that carry that head. Removing it zeroes those columns.

Per chosen layer and data set X (its attended tokens t, or only the positions that predict an
answer token with ``tokens="answer"``), with the projection's input ``a_t ∈ R^{I}`` split into K
components of g units (``a_{t,k} ∈ R^g``; g = 1 for neurons, ``head_dim`` for heads):

- the local output (bias excluded) ``y_t = W a_t ∈ R^D`` and component k's contribution
  ``z_{t,k} = W_k a_{t,k} ∈ R^D`` (``W_k ∈ R^{D×g}`` its columns), so ``y_t = Σ_k z_{t,k}``;
- the subset fidelity of a subset S: the share of the output energy that the best rescaled
  reconstruction from S alone recovers,
  ``SF_X(S) = 1 - min_β Σ_t ‖y_t - Σ_{k∈S} β_k z_{t,k}‖² / Σ_t ‖y_t‖²``  in [0, 1];
- for a singleton (closed form, what is computed, streaming over batches with O(K) memory):
  ``SF_X(k) = c_k² / (m_k · e)`` with ``c_k = Σ_t ⟨y_t, z_{t,k}⟩``, ``m_k = Σ_t ‖z_{t,k}‖²``,
  ``e = Σ_t ‖y_t‖²`` (0 for a component that never contributes). When the contributions are
  uncorrelated over X, ``SF_X(S) = Σ_{k∈S} SF_X(k)`` exactly, the paper's optimality condition.

A component is specific to the forget data when it reconstructs more of the layer's output on
forget tokens than on retain tokens. ``score`` (higher = removed first; only components with a
score > 0 are ever removed, so fewer than the budget may go when few are forget-specific):

- ``"difference"`` (default): ``SF_forget(k) - SF_retain(k)``;
- ``"log_ratio"``: ``log((SF_forget(k) + ε) / (SF_retain(k) + ε))``, ε = 1e-6;
- ``"forget"``: ``SF_forget(k)`` alone (forget data only, no retain set needed; removes what the
  forget data relies on, whether or not the retain data does too: far less specific).

The budget: ``amount`` is a count (an int >= 1) or a fraction in (0, 1) of the components, per
chosen layer (``budget="layer"``) or over all chosen layers ranked together (``budget="global"``;
fidelities are shares of each layer's own output energy, so they compare across layers). Beyond
the paper: the user's forget and retain sets are scored (no synthetic data), removal is pure
zeroing (the kept weights are not refitted), and the components are MLP neurons or attention
heads instead of convolution channels.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lit_unlearn import checks
from lit_unlearn.methods.base import UnlearningModule
from lit_unlearn.models import DOWN_PROJECTIONS, StopForward, decoder_layers, mlp_down_projections

SCORES = ("difference", "log_ratio", "forget")
COMPONENTS = ("neurons", "heads")
BUDGETS = ("layer", "global")
TOKENS = ("all", "answer")
LOG_RATIO_EPS = 1e-6
REMOVED_FILE = "modhifi_removed.json"  # in the saved model directory: the removed components
ATTENTIONS = ("self_attn", "attn", "attention", "self_attention")
ATTENTION_OUTPUTS = ("o_proj", "c_proj", "dense", "out_proj")

# ---------------------------------------------------------------------------- functional core


@dataclass
class FidelityStats:
    """Running sums over the tokens of one data set for one layer, ``K`` components.

    Attributes:
        dot: ``c [K]``, ``Σ_t ⟨y_t, z_{t,k}⟩``.
        energy: ``m [K]``, ``Σ_t ‖z_{t,k}‖²``.
        total: ``e``, ``Σ_t ‖y_t‖²`` (0-dim).
        tokens: the number of tokens summed.
    """

    dot: Tensor
    energy: Tensor
    total: Tensor
    tokens: int = 0

    def __add__(self, other: FidelityStats) -> FidelityStats:
        return FidelityStats(self.dot + other.dot.to(self.dot.device), self.energy + other.energy.to(self.dot.device),
                             self.total + other.total.to(self.dot.device), self.tokens + other.tokens)


def output_weight(module: nn.Module) -> Tensor:
    """The projection's weight as ``W [D_out, I_in]`` (``nn.Linear``'s layout; GPT-2's ``Conv1D``
    stores ``[I_in, D_out]`` and is transposed here, as a view)."""
    weight = module.weight
    return weight if isinstance(module, nn.Linear) else weight.T


def fidelity_statistics(inputs: Tensor, weight: Tensor, group_size: int = 1) -> FidelityStats:
    """The sums of :class:`FidelityStats` over a set of tokens.

    Args:
        inputs: the projection's inputs ``a [N, I]`` on the N selected tokens.
        weight: ``W [D, I]`` (``y = W a``, bias excluded).
        group_size: g, input units per component (1: neurons; ``head_dim``: heads); ``I = K g``.

    Returns:
        ``dot [K]``, ``energy [K]`` (float64) and ``total`` over the N tokens.
    """
    a = inputs.reshape(-1, inputs.shape[-1]).float()
    w = weight.float()
    n, width = a.shape
    if width % group_size:
        raise ValueError(f"fidelity_statistics: {width} input units do not split into components of {group_size}")
    k = width // group_size
    y = a @ w.T  # [N, D]
    back = y @ w  # [N, I]: Wᵀ y_t, so ⟨y_t, z_{t,k}⟩ = Σ_{j∈k} a_{t,j} (Wᵀ y_t)_j
    dot = (a * back).view(n, k, group_size).sum(dim=(0, 2))
    if group_size == 1:
        energy = (a * a).sum(0) * (w * w).sum(0)  # ‖z_{t,i}‖² = a_{t,i}² ‖w_i‖²
    else:
        wk = w.view(w.shape[0], k, group_size)
        gram = torch.einsum("dkg,dkh->kgh", wk, wk)  # W_kᵀ W_k  [K, g, g]
        ak = a.view(n, k, group_size)
        energy = torch.einsum("nkg,kgh,nkh->k", ak, gram, ak)
    return FidelityStats(dot.double(), energy.double(), (y * y).sum().double(), n)


def singleton_fidelity(stats: FidelityStats) -> Tensor:
    """``SF(k) = c_k² / (m_k · e)`` ``[K]`` in [0, 1]: the share of the layer output's energy
    that component k alone, optimally rescaled, reconstructs (0 where ``m_k · e`` is 0)."""
    denom = stats.energy * stats.total
    sf = torch.where(denom > 0, stats.dot.square() / denom.clamp(min=torch.finfo(denom.dtype).tiny), 0.0)
    return sf.clamp(0.0, 1.0)  # ≤ 1 by Cauchy-Schwarz; the clamp removes rounding above it


def specificity(forget: Tensor, retain: Tensor | None, score: str = "difference") -> Tensor:
    """Forget-specificity ``[K]`` of each component from its fidelities on forget and retain data
    (see the module docstring); components with a score > 0 are candidates for removal."""
    if score == "forget":
        return forget.clone()
    if retain is None:
        raise ValueError(f"ModHiFi: `score` {score!r} compares with the retain data, which is missing")
    if score == "difference":
        return forget - retain
    if score == "log_ratio":
        return torch.log((forget + LOG_RATIO_EPS) / (retain + LOG_RATIO_EPS))
    raise ValueError(f"ModHiFi: `score` must be one of {SCORES}, got {score!r}")


def budget_count(amount: int | float, total: int) -> int:
    """Components to remove out of ``total``: ``amount`` itself for an int, else
    ``max(1, round(amount · total))`` for a fraction (at most ``total``)."""
    if isinstance(amount, int):
        return min(amount, total)
    return min(total, max(1, round(amount * total)))


def select_components(scores: dict[str, Tensor], amount: int | float, budget: str = "layer") -> dict[str, list[int]]:
    """The components to remove: ``{layer name: sorted component indices}``.

    The highest-scoring components with a score > 0 (ties: the lower index first), ``amount``
    per layer (``budget="layer"``) or over all layers together (``"global"``, the count or
    fraction of all their components).
    """
    if budget == "layer":
        out = {}
        for name, s in scores.items():
            order = _ranked(s)[: budget_count(amount, s.numel())]
            out[name] = sorted(int(i) for i in order if s[i] > 0)
        return out
    if budget != "global":
        raise ValueError(f"ModHiFi: `budget` must be one of {BUDGETS}, got {budget!r}")
    names = list(scores)
    flat = torch.cat([scores[n].double().flatten() for n in names])
    owner = torch.cat([torch.full((scores[n].numel(),), j) for j, n in enumerate(names)])
    offset = torch.cat([torch.arange(scores[n].numel()) for n in names])
    out = {n: [] for n in names}
    for i in _ranked(flat)[: budget_count(amount, flat.numel())]:
        if flat[i] > 0:
            out[names[int(owner[i])]].append(int(offset[i]))
    return {n: sorted(v) for n, v in out.items()}


def _ranked(scores: Tensor) -> Tensor:
    """Indices by descending score, ties broken by the lower index (a stable sort)."""
    return torch.sort(scores.double().cpu(), descending=True, stable=True).indices


@torch.no_grad()
def zero_components(module: nn.Module, indices: list[int], group_size: int = 1) -> None:
    """Zero the input columns of components ``indices`` (``group_size`` units each) in the
    projection ``module``'s weight; nothing else changes (a bias, if any, is kept: it belongs
    to no component)."""
    if not indices:
        return
    columns = torch.cat([torch.arange(i * group_size, (i + 1) * group_size) for i in indices])
    weight = output_weight(module)
    weight[:, columns.to(weight.device)] = 0


# ---------------------------------------------------------------------------- the method


class ModHiFi(UnlearningModule):
    """ModHiFi-U (interpretation): remove the components whose subset fidelity is specific to the
    forget data; forward passes only, no gradient, no optimizer step.

    At the start of fit (after the start evaluation) the chosen layers' projection inputs are
    collected with forward passes over up to ``max_forget_batches`` forget and
    ``max_retain_batches`` retain evaluation batches (unsharded: every rank scores the same),
    the singleton fidelities ``SF_forget``, ``SF_retain`` and the ``score`` of every component
    computed (see the module docstring for the formulas and shapes), and the selected components
    zeroed in place. Training then stops before the first batch: no optimizer step is taken, the
    end evaluation and the saved model see the edited weights, and ``modhifi_removed.json``
    (the removed components per projection) is saved with the model. Logged:
    ``modhifi/removed``, ``modhifi/removed_fraction``, ``modhifi/score_seconds``.

    Args:
        components: ``"neurons"`` (MLP intermediate units) or ``"heads"`` (attention heads).
        layers: 0-based decoder layers to edit; default every layer.
        amount: components to remove: an int >= 1 (a count) or a float in (0, 1) (a fraction),
            per layer or in total (``budget``).
        budget: ``"layer"`` (``amount`` in each chosen layer) or ``"global"`` (all chosen layers
            ranked together).
        score: ``"difference"``, ``"log_ratio"`` or ``"forget"`` (module docstring).
        tokens: ``"all"`` attended tokens, or ``"answer"``: the positions that predict an answer token.
        max_forget_batches: forget evaluation batches scored (None: the whole forget set).
        max_retain_batches: retain evaluation batches scored (None: the whole retain set).
        **kwargs: see :class:`UnlearningModule` (``forget_weight``, ``retain_weight`` and the
            optimizer are unused: nothing trains).
    """

    forget_doc = ("none (no gradient): zero the MLP neurons (or heads) whose subset fidelity, the share of the "
                  "layer output they reconstruct, is higher on forget than on retain data (interpretation)")
    retain_doc = "scoring only"

    uses_sample_weights = False
    supports_lora = False  # edits the base weights
    # Its weight edit is no optimizer step: the training test matrices (which count steps) skip it.
    takes_optimizer_steps = False
    checkpoint_state = ("removed", "scores")

    def __init__(self, *args: Any, components: str = "neurons", layers: list[int] | None = None,
                 amount: int | float = 0.1, budget: str = "layer", score: str = "difference", tokens: str = "all",
                 max_forget_batches: int | None = None, max_retain_batches: int | None = 32, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for arg, value, allowed in (("components", components, COMPONENTS), ("budget", budget, BUDGETS),
                                    ("score", score, SCORES), ("tokens", tokens, TOKENS)):
            if value not in allowed:
                raise ValueError(f"ModHiFi: `{arg}` must be one of {allowed}, got {value!r}")
        if layers is not None and (not isinstance(layers, (list, tuple)) or not layers
                                   or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in layers)):
            raise ValueError(f"ModHiFi: `layers` must be a non-empty list of layer indices >= 0 or null, "
                             f"got {layers!r}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or (
                isinstance(amount, int) and amount < 1) or (isinstance(amount, float) and not 0 < amount < 1):
            raise ValueError(f"ModHiFi: `amount` must be a count (an integer >= 1) or a fraction in (0, 1), "
                             f"got {amount!r}")
        checks.positive_int("ModHiFi", "max_forget_batches", max_forget_batches, optional=True)
        checks.positive_int("ModHiFi", "max_retain_batches", max_retain_batches, optional=True)
        self.components, self.layers, self.amount, self.budget = components, layers, amount, budget
        self.score, self.tokens = score, tokens
        self.max_forget_batches, self.max_retain_batches = max_forget_batches, max_retain_batches
        self.retain_kind = None  # no retain term: retain data only enters the score
        self.removed: dict[str, list[int]] = {}
        self.scores: dict[str, dict[str, Tensor]] = {}

    # ---------------------------------------------------------------- components
    def projections(self) -> dict[str, tuple[nn.Module, int]]:
        """``{module name: (projection, group size)}`` of the chosen layers, in layer order."""
        blocks = decoder_layers(self.model)
        layers = list(range(len(blocks))) if self.layers is None else sorted(set(self.layers))
        if layers[-1] >= len(blocks):
            raise ValueError(f"ModHiFi: `layers` names layer {layers[-1]} but the model has {len(blocks)} "
                             f"(0..{len(blocks) - 1})")
        if self.components == "neurons":
            found = mlp_down_projections(self.model, layers)
            if len(found) != len(layers):
                raise ValueError(f"ModHiFi: found no MLP down-projection in some of the layers {layers} (an MLP "
                                 f"child named one of {DOWN_PROJECTIONS}); use components='heads'")
            return {name: (module, 1) for name, module in found.items()}
        names = {id(m): n for n, m in self.model.named_modules()}
        heads = getattr(self.model.config, "num_attention_heads", None) or getattr(self.model.config, "n_head", None)
        out = {}
        for i in layers:
            attention = next((getattr(blocks[i], a) for a in ATTENTIONS if hasattr(blocks[i], a)), None)
            proj = next((getattr(attention, o) for o in ATTENTION_OUTPUTS if hasattr(attention, o)), None)
            if proj is None or not heads:
                raise ValueError(f"ModHiFi: `components='heads'` found no attention output projection (or no "
                                 f"num_attention_heads) in layer {i} of {type(self.model).__name__}; use 'neurons'")
            out[names[id(proj)]] = (proj, output_weight(proj).shape[1] // heads)
        return out

    @torch.no_grad()
    def collect(self, data, max_batches: int | None) -> dict[str, FidelityStats]:
        """:class:`FidelityStats` per projection over up to ``max_batches`` evaluation batches of ``data``."""
        projections = self.projections()
        stats: dict[str, FidelityStats] = {}
        mask: dict[str, Tensor] = {}
        last = list(projections)[-1]

        def hook(name, module, group):
            def fn(mod, args):
                a = args[0][mask["m"]]  # [N, I] on the selected tokens
                part = fidelity_statistics(a, output_weight(module).detach(), group)
                stats[name] = stats[name] + part if name in stats else part
                if name == last:
                    raise StopForward  # later layers and the LM head are not needed
            return fn

        handles = [m.register_forward_pre_hook(hook(n, m, g)) for n, (m, g) in projections.items()]
        was_training = self.model.training
        self.model.eval()
        loader = self._datamodule().eval_dataloader(data, shard=False)
        try:
            with self.eval_context():
                for b, batch in enumerate(loader):
                    if max_batches is not None and b >= max_batches:
                        break
                    batch = {k: v.to(self.device) for k, v in batch.items() if isinstance(v, Tensor)}
                    mask["m"] = self.token_mask(batch)
                    try:
                        self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   use_cache=False)
                    except StopForward:
                        pass
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        return stats

    def token_mask(self, batch: dict[str, Tensor]) -> Tensor:
        """``[B, T]`` bool: the positions scored (``tokens``)."""
        attended = batch["attention_mask"].bool()
        if self.tokens == "all":
            return attended
        predicts = torch.zeros_like(attended)
        predicts[:, :-1] = batch["labels"][:, 1:] != -100  # position t predicts the answer token t + 1
        return predicts & attended

    @torch.no_grad()
    def score_and_remove(self) -> dict[str, list[int]]:
        """Score every component of the chosen layers, zero the selected ones, return them."""
        dm = self._datamodule()
        started = time.perf_counter()
        forget = self.collect(dm.forget_set, self.max_forget_batches)
        retain = self.collect(self.retain_data(dm), self.max_retain_batches) if self.score != "forget" else None
        projections = self.projections()
        scores, self.scores = {}, {}
        for name in projections:
            sf_f = singleton_fidelity(forget[name])
            sf_r = singleton_fidelity(retain[name]) if retain is not None else None
            scores[name] = specificity(sf_f, sf_r, self.score)
            self.scores[name] = {"forget": sf_f.float().cpu(), "score": scores[name].float().cpu(),
                                 **({"retain": sf_r.float().cpu()} if sf_r is not None else {})}
        chosen = select_components(scores, self.amount, self.budget)
        for name, (module, group) in projections.items():
            zero_components(module, chosen[name], group)
        self.removed = chosen
        seconds = time.perf_counter() - started
        removed = sum(len(v) for v in chosen.values())
        total = sum(s.numel() for s in scores.values())
        kind = "neurons" if self.components == "neurons" else "heads"
        rank_zero_info(f"ModHiFi: removed {removed} of {total} {kind} ({self.score} of subset fidelity on "
                       f"{forget[next(iter(forget))].tokens} forget tokens) in {seconds:.1f} s: "
                       + ", ".join(f"{n}: {len(v)}" for n, v in chosen.items()))
        logs = {"modhifi/removed": float(removed), "modhifi/removed_fraction": removed / max(total, 1),
                "modhifi/score_seconds": seconds}
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics(logs, step=0)
        return chosen

    def retain_data(self, dm):
        """The datamodule's retain set, which every score but ``"forget"`` compares with."""
        retain = getattr(dm, "retain_set", None)
        if retain is None and self.score != "forget":
            raise ValueError(f"ModHiFi: `score` {self.score!r} compares forget with retain data, and the datamodule "
                             "has no retain set: pass `retain` to the datamodule, or use score='forget'")
        return retain

    # ---------------------------------------------------------------- fit without training
    def on_fit_start(self) -> None:
        super().on_fit_start()
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "forget_set"):
            self.retain_data(dm)  # refuse before the start evaluation
        self.projections()  # `layers` out of range, or no such projections: refused before the start evaluation

    def on_train_start(self) -> None:
        super().on_train_start()  # the start evaluation, on the unedited model
        if not self.removed:  # a resumed run restored its edited weights and `removed`
            self.score_and_remove()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int:
        self.trainer.should_stop = True
        return -1  # skip the epoch: nothing trains

    def configure_optimizers(self):
        return None  # nothing trains

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None

    def write_pretrained(self, directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """The edited model, plus ``modhifi_removed.json``: ``{projection name: [component indices]}``."""
        super().write_pretrained(directory, state_dict)
        record = {"components": self.components, "score": self.score, "removed": self.removed}
        (Path(directory) / REMOVED_FILE).write_text(json.dumps(record, indent=1))
