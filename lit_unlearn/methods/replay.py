"""General-sample replay (GeRe): a retain-side regulariser any unlearning method can add.

Zhang et al., "GeRe: Towards Efficient Anti-Forgetting in Continual Learning of LLM via General
Samples Replay" (arXiv 2508.04676, https://github.com/Qznan/GeRe): a small *fixed* set of general
texts is replayed during training, and the model is held to what the starting model θ0 did on
them. The threshold-based margin (TM) loss is the published one, read from the authors' code,
``gere/gere_trainer.py`` of https://github.com/Qznan/GeRe (commit 4936fed8:
``GeRePresaveCallback.on_train_begin``, ``GeReTrainer.init_margin_loss_thres`` and
``GeReTrainer.compute_gere_loss``):

- activations: ``outputs.hidden_states[-1]`` (the last layer's output; after the final norm in
  Hugging Face Llama-style models), every token of every replay text, every hidden unit;
- statistics: per hidden unit ``d``, the mean ``μ_d`` and the population variance
  ``σ²_d = E[h²] - μ²`` of θ0's activations over all tokens of all replay texts, computed once
  before training; thresholds ``lo = μ - 1·σ``, ``hi = μ + 1·σ``;
- each entry ``h0`` of θ0's activations is labelled negative (``h0 <= lo``), positive
  (``h0 >= hi``) or neutral (in between); the trained model's ``h`` pays
  ``relu(h - lo)`` on negative entries (it must stay at or below ``lo``), ``relu(hi - h)`` on
  positive ones, and ``relu(h - hi) + relu(lo - h)`` on neutral ones (it must stay in the band);
- reduction: the sum over the non-padding entries divided by the number of entries whose loss
  is nonzero (``+ 1e-8``): the mean violation of the violated entries (0 when none is);
- the published trainer adds the replay texts' token-mean NLL (label fitting) and the margin
  with weight 100 (``w_strategy='100'``, the default; ``'dy'`` rescales the margin to the NLL's
  size): ``constraint_weight`` and ``label_fitting`` here.

Deviations, stated plainly: the published trainer averages the replay NLL with the task loss,
``(task + replay_nll) / 2 + 100 · margin``; here the replay loss ``replay_nll + 100 · margin`` is
added to the method's loss times ``weight`` (``weight: 0.5`` reproduces the NLL's share, with the
margin at 50). ``"dynamic"`` rescales the margin to the replay NLL, not to the averaged task
loss (a forget loss can be negative). The statistics are computed on padded batches (masked), not
one text at a time; causal attention makes that the same up to rounding. ``layers`` extends the
published last layer to several (their units are concatenated: one pool of entries, one
reduction). The published code has a KL helper (``calc_kl``, temperature 2, KL(θ0 ‖ θ) summed
over the vocabulary and averaged over tokens) that its loss does not call; ``"kl"`` follows it,
averaging over real (non-padding) tokens. The L1/L2 feature losses of the paper's comparison are
not in the released code: here they are the mean absolute / squared difference between the
trained and the starting activations of ``layers`` over real tokens and hidden units. Whether
the paper's KL/L1/L2 runs kept the replay NLL is not in the code either; ``label_fitting`` (on
by default, as the trainer always adds it) applies to all four.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_unlearn import checks
from lit_unlearn.datamodules.encoding import collate
from lit_unlearn.datamodules.sources import Records, read_json
from lit_unlearn.objectives import answer_nll

LOSSES = ("tm", "nll", "kl", "l1", "l2")
TEXT_FILES = (".json", ".jsonl", ".txt")
_EPS = 1e-8  # the published reduction's


def threshold_margin(hidden: Tensor, category: Tensor, low: Tensor, high: Tensor, mask: Tensor) -> Tensor:
    """GeRe's threshold-based margin loss (scalar).

    Args:
        hidden: ``[B, T, D]`` activations of the trained model.
        category: ``[B, T, D]`` int8: -1 where the starting model's activation was ``<= low``,
            1 where it was ``>= high``, 0 in between.
        low, high: ``[D]`` thresholds ``μ ∓ k·σ`` of the starting model's activations.
        mask: ``[B, T]`` real tokens.
    """
    h = hidden.float()
    neg = torch.relu(h - low)
    pos = torch.relu(high - h)
    neu = torch.relu(h - high) + torch.relu(low - h)
    loss = torch.where(category < 0, neg, torch.where(category > 0, pos, neu)) * mask.unsqueeze(-1).to(h.dtype)
    return loss.sum() / ((loss != 0).sum() + _EPS)


class GeneralReplay:
    """GeRe general-sample replay: a fixed set of general texts, replayed every step, with a loss
    that holds the model to the starting model θ0 on them (see the module docstring for the
    published formula and its source).

    Pass it to any method: ``NPO(..., replay=GeneralReplay(texts="retain", n=64))``, or in YAML
    ``model.init_args.replay: {class_path: lit_unlearn.GeneralReplay, init_args: {...}}``. The
    method adds ``weight * replay_loss`` to its loss and logs ``train/replay_loss`` (and the parts,
    ``train/replay_nll``, ``train/replay_<loss>``).

    Args:
        texts: the replay texts: a list of strings; a ``.txt`` (one text per non-empty line),
            ``.json`` or ``.jsonl`` file (rows are strings or objects with ``text_field``); or the
            name of a set of the datamodule: ``"retain"``, ``"forget"``, or a neighbor, evaluation,
            test or suite set, encoded with the datamodule's prompt template (prompt and answer
            are both replayed).
        n: how many texts are replayed, drawn once with ``seed`` (all of them when there are
            fewer; the published set is 1000 SlimPajama chunks).
        loss: ``"tm"`` (the threshold-based margin on activation states, GeRe's), ``"nll"``
            (plain label fitting), ``"kl"`` (KL(θ0 ‖ θ) of the next-token distributions, at
            ``kl_temperature``), ``"l1"`` / ``"l2"`` (mean absolute / squared difference from
            θ0's activations of ``layers``).
        weight: the replay loss's weight in the method's loss.
        batch_size: replay texts per training step (cycled in a fixed seeded order).
        seed: draws the ``n`` texts and their order.
        layers: indices into Hugging Face's ``hidden_states`` (0: the embeddings, -1: the last
            layer's output; default ``[-1]``, the published).
        threshold_std: ``k`` of the TM thresholds ``μ ± k·σ`` (published 1).
        constraint_weight: weight of the TM/KL/L1/L2 term relative to the replay NLL (published
            100 for TM), or ``"dynamic"``: each step the term is scaled to the NLL's value
            (published ``w_strategy='dy'``; needs ``label_fitting``).
        label_fitting: add the replay texts' token-mean NLL to the TM/KL/L1/L2 term (the
            published trainer always does). Ignored by ``loss="nll"``.
        kl_temperature: softmax temperature of ``"kl"`` (the published helper's 2).
        max_length: tokens kept per text (published 563: a 512-token chunk with some slack).
        text_field: the field of JSON rows that holds the text.

    θ0's statistics, activation labels or features are computed once at the start of fit
    (``prepare``): with LoRA the adapters are disabled for it, otherwise no optimizer step has
    been taken yet. They are saved in checkpoints, so a resumed run keeps them. ``"kl"`` needs
    θ0's logits on every replay batch; caching them would take ``n × tokens × vocabulary``
    floats, so they are computed on the fly from the method's reference model (a frozen copy,
    or the base with adapters disabled under LoRA), which the method then keeps.
    """

    def __init__(self, texts: str | list[str] = "retain", n: int = 1000, loss: str = "tm", weight: float = 1.0,
                 batch_size: int = 4, seed: int = 0, layers: list[int] | None = None, threshold_std: float = 1.0,
                 constraint_weight: float | str = 100.0, label_fitting: bool = True, kl_temperature: float = 2.0,
                 max_length: int = 563, text_field: str = "text") -> None:
        name = "GeneralReplay"
        self.texts = _check_texts(texts)
        self.n = checks.positive_int(name, "n", n)
        self.loss = checks.one_of(name, "loss", loss, LOSSES)
        self.weight = checks.non_negative(name, "weight", weight)
        self.batch_size = checks.positive_int(name, "batch_size", batch_size)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"{name}: `seed` must be an integer, got {seed!r}")
        self.seed = seed
        layers = [-1] if layers is None else layers
        if (not isinstance(layers, (list, tuple)) or not layers
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers)
                or len(set(layers)) != len(layers)):
            raise ValueError(f"{name}: `layers` must be a non-empty list of distinct integers (indices into "
                             f"hidden_states, -1: the last layer), got {layers!r}")
        self.layers = list(layers)
        self.threshold_std = checks.non_negative(name, "threshold_std", threshold_std)
        if isinstance(constraint_weight, str):
            if constraint_weight != "dynamic":
                raise ValueError(f"{name}: `constraint_weight` must be a number >= 0 or 'dynamic', "
                                 f"got {constraint_weight!r}")
        else:
            constraint_weight = checks.non_negative(name, "constraint_weight", constraint_weight)
        self.label_fitting = checks.flag(name, "label_fitting", label_fitting)
        if constraint_weight == "dynamic" and not label_fitting and loss != "nll":
            raise ValueError(f"{name}: `constraint_weight: dynamic` scales the {loss} term to the replay NLL, "
                             "which `label_fitting: false` leaves out; give a number or set label_fitting: true")
        self.constraint_weight = constraint_weight
        self.kl_temperature = checks.positive(name, "kl_temperature", kl_temperature)
        self.max_length = checks.positive_int(name, "max_length", max_length)
        if self.max_length < 2:
            raise ValueError(f"{name}: `max_length` must be at least 2 (a replay text needs 2 tokens), "
                             f"got {max_length}")
        if not isinstance(text_field, str) or not text_field:
            raise ValueError(f"{name}: `text_field` must be a non-empty string, got {text_field!r}")
        self.text_field = text_field
        self.logs: dict[str, Tensor] = {}  # the parts of the last replay loss
        # θ0's data, filled by prepare() or load_state_dict()
        self.ids: list[Tensor] | None = None  # [T_i] token ids of each replayed text, in replay order
        self.targets: list[Tensor] | None = None  # [T_i, L*D]: TM categories (int8) or L1/L2 features
        self.low: Tensor | None = None  # [L*D] TM thresholds
        self.high: Tensor | None = None
        self.calls = 0  # replay batches drawn so far (this rank)

    def __repr__(self) -> str:
        return (f"GeneralReplay(texts={self.texts if isinstance(self.texts, str) else f'<{len(self.texts)} texts>'}, "
                f"n={self.n}, loss={self.loss!r}, weight={self.weight})")

    @property
    def needs_reference_model(self) -> bool:
        """``"kl"`` computes θ0's logits per batch: the method keeps a reference model."""
        return self.loss == "kl"

    @property
    def uses_hidden_states(self) -> bool:
        return self.loss in ("tm", "l1", "l2")

    # ------------------------------------------------------------------ texts
    def _token_ids(self, module) -> list[Tensor]:
        """The ``n`` seeded replay texts as token ids, in replay order."""
        if isinstance(self.texts, list) or _is_file(self.texts):
            texts = self.texts if isinstance(self.texts, list) else _read_texts(Path(self.texts), self.text_field)
            order = _draw(len(texts), self.n, self.seed)
            tok = module.tokenizer
            enc = tok([texts[i] for i in order], add_special_tokens=False, truncation=True,
                      max_length=self.max_length)["input_ids"]
            where = [f"text {i} of `texts`" if isinstance(self.texts, list) else
                     f"text {i} of '{self.texts}'" for i in order]
        else:
            dm = module._datamodule()
            records = _set_records(dm, self.texts)
            order = _draw(len(records), self.n, self.seed)
            sub = Records([records.rows[i] for i in order], f"{records.origin} (replay)", records.path, records.meta)
            enc = [ids.tolist()[: self.max_length] for ids, *_ in dm.encode(sub, "replay").examples]
            where = [f"{records.where(i)} (`texts: {self.texts}`)" for i in order]
        for ids, w in zip(enc, where):
            if len(ids) < 2:
                raise ValueError(f"GeneralReplay: {w} has {len(ids)} token(s); a replay text needs at least 2")
        return [torch.tensor(ids, dtype=torch.long) for ids in enc]

    def _batch(self, rows: list[int], pad_id: int, device) -> dict[str, Tensor]:
        items = [(self.ids[i], self.ids[i], None, i) for i in rows]
        return {k: v.to(device) for k, v in collate(items, pad_id).items()}

    # ------------------------------------------------------------------ θ0
    @torch.no_grad()
    def prepare(self, module) -> None:
        """Compute what the loss needs from the starting model (once; a checkpoint's state is kept)."""
        if self.ids is not None:
            return
        if module.global_step > 0 and not module._lora_applied:
            rank_zero_warn("GeneralReplay: preparing after optimizer steps without the checkpoint's replay state; "
                           "the statistics are those of the current weights, not of the starting model")
        self.ids = self._token_ids(module)
        self.calls = 0
        if not self.uses_hidden_states:
            return
        model = module.model
        n_hidden = _num_hidden_states(model)
        bad = [x for x in self.layers if not -n_hidden <= x < n_hidden]
        if bad:
            raise ValueError(f"GeneralReplay: `layers` {bad} out of range: the model has {n_hidden} hidden states "
                             f"(0: the embeddings, {n_hidden - 1} or -1: the last layer)")
        features: list[Tensor] = []
        was_training = model.training
        model.eval()
        try:
            with module.adapters_disabled(), module.eval_context():
                for start in range(0, len(self.ids), self.batch_size):
                    rows = list(range(start, min(start + self.batch_size, len(self.ids))))
                    batch = self._batch(rows, _pad_id(module), module.device)
                    hidden = self._hidden(model, batch)
                    features += [hidden[k, : len(self.ids[i])].float().cpu() for k, i in enumerate(rows)]
        finally:
            model.train(was_training)
        if self.loss != "tm":
            self.targets = features
            return
        flat = torch.cat(features).double()
        mean = flat.mean(0)
        var = (flat.square().mean(0) - mean.square()).clamp(min=0)  # the published E[h²] - μ²
        std = var.sqrt()
        self.low, self.high = (mean - self.threshold_std * std).float(), (mean + self.threshold_std * std).float()
        self.targets = [_categories(f, self.low, self.high) for f in features]

    def _hidden(self, model, batch: dict[str, Tensor], out=None) -> Tensor:
        """``[B, T, L*D]``: the ``layers`` hidden states, concatenated along the units."""
        if out is None:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                        output_hidden_states=True)
        return torch.cat([out.hidden_states[x] for x in self.layers], dim=-1)

    # ------------------------------------------------------------------ the loss
    def next_rows(self, module) -> list[int]:
        """Rows of the next replay batch: the fixed order cycled, ranks taking interleaved batches."""
        world, rank = (module.trainer.world_size, module.trainer.global_rank) if module._trainer else (1, 0)
        start = (self.calls * world + rank) * self.batch_size
        self.calls += 1
        return [(start + j) % len(self.ids) for j in range(self.batch_size)]

    def __call__(self, module) -> Tensor:
        """The replay loss (scalar, with gradient) on the next replay batch; its parts go to ``self.logs``."""
        if self.ids is None:
            raise RuntimeError("GeneralReplay: prepare(module) must run before the first replay loss (the method's "
                               "on_train_start does it)")
        rows = self.next_rows(module)
        batch = self._batch(rows, _pad_id(module), module.device)
        model = module.model
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                    output_hidden_states=self.uses_hidden_states)
        mask = batch["attention_mask"].bool()
        nll = answer_nll(out.logits, batch["labels"], "token").mean()
        self.logs = {"replay_nll": nll.detach()}
        if self.loss == "nll":
            return nll
        if self.loss == "kl":
            term = kl_replay(out.logits, module.reference_logits(batch), mask, self.kl_temperature)
        else:
            hidden = self._hidden(model, batch, out)
            target = _pad([self.targets[i] for i in rows], hidden.shape[1]).to(hidden.device)
            if self.loss == "tm":
                term = threshold_margin(hidden, target, self.low.to(hidden.device), self.high.to(hidden.device), mask)
            else:
                diff = hidden.float() - target
                per = diff.abs() if self.loss == "l1" else diff.square()
                m = mask.unsqueeze(-1).float()
                term = (per * m).sum() / (m.sum() * per.shape[-1]).clamp(min=1)
        self.logs[f"replay_{self.loss}"] = term.detach()
        weight = self.constraint_weight
        if weight == "dynamic":
            weight = nll.detach() / (term.detach() + _EPS)
        return (nll if self.label_fitting else 0) + weight * term

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"ids": self.ids, "targets": self.targets, "low": self.low, "high": self.high, "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("ids", "targets", "low", "high", "calls"):
            setattr(self, key, state.get(key))
        self.calls = self.calls or 0


def kl_replay(logits: Tensor, ref_logits: Tensor, mask: Tensor, temperature: float = 2.0) -> Tensor:
    """``KL(softmax(z0/τ) ‖ softmax(z/τ))`` summed over the vocabulary, averaged over the real tokens ``mask``
    (every position, as the published ``calc_kl``; it is not scaled by τ²)."""
    logq = F.log_softmax(logits.float() / temperature, dim=-1)
    logp = F.log_softmax(ref_logits.float() / temperature, dim=-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    m = mask.float()
    return (kl * m).sum() / m.sum().clamp(min=1)


def _categories(h0: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """int8 labels of θ0's activations: -1 (``<= low``), 1 (``>= high``), 0 (between)."""
    out = torch.zeros(h0.shape, dtype=torch.int8)
    out[h0 >= high] = 1
    out[h0 <= low] = -1  # the published order: negative wins when low == high (k = 0)
    return out


def _pad(rows: list[Tensor], width: int) -> Tensor:
    out = torch.zeros(len(rows), width, rows[0].shape[-1], dtype=rows[0].dtype)
    for k, r in enumerate(rows):
        out[k, : len(r)] = r
    return out


def _pad_id(module) -> int:
    pad = getattr(module.tokenizer, "pad_token_id", None)
    return 0 if pad is None else int(pad)


def _num_hidden_states(model) -> int:
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if layers is None:
        raise ValueError("GeneralReplay: cannot tell the model's number of layers (config.num_hidden_layers) "
                         "to check `layers`")
    return int(layers) + 1


def _draw(total: int, n: int, seed: int) -> list[int]:
    """``min(n, total)`` row ids in a seeded random order."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=g)[: min(n, total)].tolist()


def _is_file(texts: str) -> bool:
    return Path(texts).suffix.lower() in TEXT_FILES


def _check_texts(texts: Any) -> str | list[str]:
    if isinstance(texts, (list, tuple)):
        if not texts:
            raise ValueError("GeneralReplay: `texts` is an empty list")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"GeneralReplay: `texts` item {i} must be a non-empty string, got {t!r}")
        return list(texts)
    if not isinstance(texts, str) or not texts:
        raise ValueError("GeneralReplay: `texts` must be a list of strings, a .txt/.json/.jsonl file or the name "
                         f"of a datamodule set ('retain'), got {texts!r}")
    path = Path(texts).expanduser()
    if path.suffix:
        if path.suffix.lower() not in TEXT_FILES:
            raise ValueError(f"GeneralReplay: `texts` file '{texts}' must end in one of {', '.join(TEXT_FILES)}")
        if not path.is_file():
            raise FileNotFoundError(f"GeneralReplay: `texts` file '{texts}' does not exist")
        return str(path)
    if "/" in texts:
        raise ValueError(f"GeneralReplay: `texts` '{texts}' is neither a .txt/.json/.jsonl file nor a set name")
    return texts


def _read_texts(path: Path, field: str) -> list[str]:
    raw = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".txt":
        texts = [line for line in raw.splitlines() if line.strip()]
    else:
        rows = read_json(path, "GeneralReplay: `texts` file")
        texts = []
        for i, row in enumerate(rows):
            text = row.get(field) if isinstance(row, dict) else row
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"GeneralReplay: row {i} of `texts` file '{path}' must be a non-empty string or an "
                                 f"object with a non-empty `text_field` '{field}', got {row!r:.80}")
            texts.append(text)
    if not texts:
        raise ValueError(f"GeneralReplay: `texts` file '{path}' holds no text")
    return texts


def _set_records(dm, name: str) -> Records:
    """The records of the datamodule's set ``name``."""
    sets: dict[str, Any] = {}
    for attr in ("suite_records", "test_records", "eval_records", "neighbor_records"):
        sets.update(getattr(dm, attr, None) or {})
    sets["forget"] = dm.forget_records
    if getattr(dm, "retain_records", None) is not None:
        sets["retain"] = dm.retain_records
    if name not in sets:
        raise ValueError(f"GeneralReplay: `texts` '{name}' is not a set of the datamodule (it has {sorted(sets)}) "
                         "nor a .txt/.json/.jsonl file")
    return sets[name]
