"""``RULE``: reinforcement unlearning with a refusal boundary (Zhang et al., 2025).

Unlearning as a refusal policy: refuse questions about the forget target, keep answering
questions near it (the boundary). Two stages in one fit:

1. Rejection steering (the first ``rs_steps`` optimizer steps): NLL of a refusal answer to a
   small seeded part (``rs_fraction``) of the forget questions, so that the policy refuses
   at all before reinforcement learning starts (with ``rs_retain``, beside the boundary
   questions' NLL, as rejection tuning; the paper's stage one has the refusals alone).
2. Refusal boundary optimisation: on-policy reinforcement learning with a verifiable,
   rule-based reward (:func:`rule_rewards`). For each forget and retain ("boundary")
   question of the batch, ``group_size`` answers are sampled from the current model; the
   rewards are normalised within each question's group (:func:`group_advantages`, GRPO)
   and the loss is GRPO's (:func:`grpo_loss`): the advantage-weighted log-likelihood of the
   sampled answers plus ``beta`` times a KL estimate to the start model. ``advantage: batch``
   normalises over the whole step instead (REINFORCE++; the paper reports RULE with several
   online RL algorithms).

The authors' code (github.com/chenlong-clock/RULE-Unlearn, built on verl) was not readable
here; the reward follows the paper's description (refusal on forget queries rewarded,
refusal on boundary queries penalised, helpful answers there rewarded), and the rest is
GRPO as DeepSeekMath and TRL define it. Sampling happens inside ``training_step`` (automatic
optimization: one update per batch of samples, so the ratio of PPO-style clipping is 1).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_unlearn import checks
from lit_unlearn.datamodules.encoding import collate
from lit_unlearn.methods.base import Objectives, UnlearningModule
from lit_unlearn.methods.idk import _RefusalMixin
from lit_unlearn.objectives import IGNORE_INDEX, nll

SCORERS = ("rouge_score", "rouge", "none")


def rule_rewards(answers: Sequence[str], is_forget: Sequence[bool], references: Sequence[str | None],
                 refused: Sequence[bool], scorer: str = "rouge_score", boundary_refusal: float = -1.0) -> Tensor:
    """RULE's verifiable reward of each sampled answer ``[N]``; ``refused``: the refusal detector's
    verdict on each answer (:func:`~lit_unlearn.evaluation.refusal.is_refusal`).

    - Forget question: 1 if the answer is a refusal, else 0.
    - Boundary question: ``boundary_refusal`` (-1) if it is a refusal; otherwise the ROUGE-L
      recall of the reference answer (the start model's own answer: "helpful and correct"),
      or 1 with ``scorer="none"`` or no reference.
    """
    from lit_unlearn.evaluation.rwku_probes import rouge_recall

    if not len(answers) == len(is_forget) == len(references) == len(refused):
        raise ValueError(f"rule_rewards: {len(answers)} answers, {len(is_forget)} flags, {len(references)} "
                         f"references and {len(refused)} refusal verdicts; expected one of each per answer")
    checks.one_of("rule_rewards", "scorer", scorer, SCORERS)
    refused = [bool(r) for r in refused]
    rewards = [1.0 if r else 0.0 for r in refused]
    scored = [i for i, (f, r, ref) in enumerate(zip(is_forget, refused, references))
              if not f and not r and ref and scorer != "none"]
    recalls = rouge_recall([answers[i] or " " for i in scored], [references[i] for i in scored], scorer) \
        if scored else []
    recall_of = dict(zip(scored, recalls))
    for i, (forget, refusal) in enumerate(zip(is_forget, refused)):
        if not forget:
            rewards[i] = boundary_refusal if refusal else float(recall_of.get(i, 1.0))
    return torch.tensor(rewards, dtype=torch.float32)


def group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """GRPO's advantages ``[N]``: ``(r - mean_g) / (std_g + eps)`` within each consecutive group of
    ``group_size`` rewards (the unbiased std, as TRL's ``GRPOTrainer``); 0 where a group's rewards
    are all equal."""
    if rewards.numel() % group_size:
        raise ValueError(f"group_advantages: {rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size).float()
    mean = grouped.mean(1, keepdim=True)
    std = grouped.std(1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    return ((grouped - mean) / (std + eps)).flatten()


def batch_advantages(rewards: Tensor, eps: float = 1e-4) -> Tensor:
    """REINFORCE++-style advantages ``[N]``: ``(r - mean) / (std + eps)`` over the whole batch, so a
    group whose answers all earn the same (every boundary answer a refusal) still learns from the
    other groups (unbiased std; 0 where every reward is equal)."""
    r = rewards.float()
    std = r.std() if r.numel() > 1 else torch.zeros(())
    return (r - r.mean()) / (std + eps)


ADVANTAGES = ("group", "batch")


def grpo_loss(logps: Tensor, ref_logps: Tensor, advantages: Tensor, mask: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """GRPO's loss per sampled answer ``[N]`` and its KL term ``[N]`` (one update per sample, so the
    importance ratio is 1 and only its gradient remains).

    Per token: ``-(exp(logp - sg(logp)) * A - beta * kl)`` with the k3 estimator
    ``kl = exp(ref - logp) - (ref - logp) - 1``; averaged over each answer's tokens (``mask``),
    as DeepSeekMath and TRL's original ``GRPOTrainer``.

    Shapes: ``logps``, ``ref_logps``, ``mask``: ``[N, T]`` (token log-probs of the sampled
    answers); ``advantages``: ``[N]``.
    """
    delta = ref_logps - logps
    kl = torch.exp(delta) - delta - 1
    per_token = -(torch.exp(logps - logps.detach()) * advantages[:, None] - beta * kl)
    n = mask.sum(1).clamp(min=1)
    return (per_token * mask).sum(1) / n, (kl.detach() * mask).sum(1) / n


def completion_mask(tokens: Tensor, eos_id: int | None) -> Tensor:
    """``[N, T]`` True on the sampled tokens up to and including the first EOS."""
    if eos_id is None:
        return torch.ones_like(tokens, dtype=torch.bool)
    is_eos = tokens == eos_id
    before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()  # EOS tokens strictly before t
    return before == 0


class RULE(_RefusalMixin, UnlearningModule):
    """Reinforcement unlearning: rejection steering, then GRPO with a refusal-boundary reward.

    Needs question-answer forget and retain sets: the forget questions are the ones to refuse;
    the retain questions are the boundary (related but permitted; RWKU: the model's own questions
    about the target's neighbours, ``retain_subjects``), answered with their reference answers.

    Loss in stage two: ``forget_weight * mean(GRPO loss of forget answers) + retain_weight *
    mean(GRPO loss of boundary answers)``: with equal numbers of each and both weights 1 that is
    twice GRPO's mean over all answers (a learning-rate factor).

    Args:
        group_size: answers sampled per question (G, 4).
        beta: weight of the KL estimate to the start model (0.04, DeepSeekMath's).
        rs_steps: optimizer steps of rejection steering before reinforcement learning (8).
        rs_fraction: share of the forget questions rejection steering sees (0.12: the paper's
            "12% of the forget set"; at least one question).
        max_new_tokens: length of the sampled answers (32).
        temperature, top_p: sampling of the answers (1.0 and 1.0: the policy's own distribution).
        advantage: ``"group"`` (GRPO: rewards normalised within each question's answers) or
            ``"batch"`` (REINFORCE++: over every answer of the step). With ``"group"`` a question
            whose answers all earn the same teaches nothing, which stalls a small policy that
            refuses every boundary question after rejection steering.
        scorer: how a boundary answer's correctness is scored against its reference
            (``"rouge_score"``: ROUGE-L recall, case-insensitive; ``"rouge"``: RWKU's scorer;
            ``"none"``: any non-refusal earns 1).
        boundary_refusal: the reward of refusing a boundary question (-1).
        refusals, refusal_seed: the refusal answers of rejection steering (see ``IdkNLL``).
        rs_retain: add the retain (boundary) NLL of the batch to rejection steering, times
            ``retain_weight``, as rejection tuning does (True). The paper's stage one is the
            refusal NLL alone (False); on SmolLM2 that made the policy refuse 88% of the boundary
            questions before reinforcement learning started.
        **kwargs: see :class:`UnlearningModule` (lr 1e-5; ``lora`` recommended).

    The refusal detector is :func:`lit_unlearn.evaluation.refusal.is_refusal` (phrase-based).
    Logged: ``train/reward_forget``, ``train/reward_boundary``, ``train/refusal_forget``,
    ``train/refusal_boundary`` (shares of sampled answers that refuse) and ``train/kl``.
    """

    forget_doc = "RL (GRPO): reward refusing forget questions, after a few refusal-NLL steps"
    retain_doc = "RL: reward answering boundary questions correctly, penalise refusing them; KL to the start"

    requires_retain = True
    uses_reference_model = True  # without LoRA; with LoRA the start model is the base with adapters off
    uses_sample_weights = False

    def __init__(self, *args: Any, group_size: int = 4, beta: float = 0.04, rs_steps: int = 8,
                 rs_fraction: float = 0.12, max_new_tokens: int = 32, temperature: float = 1.0,
                 top_p: float = 1.0, advantage: str = "group", scorer: str = "rouge_score",
                 boundary_refusal: float = -1.0, refusals: str | None = None, refusal_seed: int = 0,
                 rs_retain: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        name = type(self).__name__
        checks.positive_int(name, "group_size", group_size)
        if group_size < 2:
            raise ValueError(f"{name}: `group_size` must be >= 2 (advantages are relative within a group), "
                             f"got {group_size}")
        checks.non_negative(name, "beta", beta)
        if not isinstance(rs_steps, int) or rs_steps < 0:
            raise ValueError(f"{name}: `rs_steps` must be an integer >= 0, got {rs_steps!r}")
        if not 0 < rs_fraction <= 1:
            raise ValueError(f"{name}: `rs_fraction` must be in (0, 1], got {rs_fraction!r}")
        checks.positive_int(name, "max_new_tokens", max_new_tokens)
        checks.positive(name, "temperature", temperature)
        if not 0 < top_p <= 1:
            raise ValueError(f"{name}: `top_p` must be in (0, 1], got {top_p!r}")
        checks.one_of(name, "scorer", scorer, SCORERS)
        checks.one_of(name, "advantage", advantage, ADVANTAGES)
        self.advantage, self.rs_retain = advantage, checks.flag(name, "rs_retain", rs_retain)
        self.group_size, self.beta, self.rs_steps, self.rs_fraction = group_size, float(beta), rs_steps, rs_fraction
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.scorer, self.boundary_refusal = scorer, float(boundary_refusal)
        self._setup_refusals(refusals, refusal_seed)
        self.retain_kind = "policy"
        self.rs_rows: list[int] = []
        self.questions: dict[str, list[tuple[Tensor, str]]] = {}

    no_retain_term_reason = ("its retain term is a policy-gradient loss on answers it samples, which a callback "
                             "cannot recompute on a retain batch")

    def has_retain_term(self) -> bool:
        return False  # for callbacks: none they can recompute (no_retain_term_reason)

    def retain_objective(self, retain):
        raise ValueError(f"RULE: {self.no_retain_term_reason}")

    # ---------------------------------------------------------------- set-up
    def on_train_start(self) -> None:
        dm = self._datamodule()
        for role, data in (("forget", dm.forget_set), ("retain", dm.retain_set)):
            ids, labels, _, _ = data[0]
            if not bool((labels == IGNORE_INDEX).any()) or not bool((labels != IGNORE_INDEX).any()):
                raise ValueError(f"RULE needs question-answer {role} records (a question to sample answers to); "
                                 f"the first {role} example has no question part. RWKU: forget_corpus: questions "
                                 "and retain_corpus: questions")
        if self.idk_set is None:
            self._encode_refusals()
        # the questions to sample on and the boundary references, decoded once (not every step)
        self.questions = {role: [self._prompt_and_reference(data, i) for i in range(len(data))]
                          for role, data in (("forget", dm.forget_set), ("retain", dm.retain_set))}
        n = len(dm.forget_set)
        g = torch.Generator().manual_seed(self.refusal_seed)
        self.rs_rows = torch.randperm(n, generator=g)[: max(1, math.ceil(self.rs_fraction * n))].tolist()
        super().on_train_start()

    def _prompt_and_reference(self, data, i: int) -> tuple[Tensor, str]:
        ids, labels, _, _ = data[i]
        prompt = ids[labels == IGNORE_INDEX]
        answer = ids[labels != IGNORE_INDEX]
        return prompt, self.tokenizer.decode(answer, skip_special_tokens=True).strip()

    # ---------------------------------------------------------------- stage one
    def steering_objectives(self, batch: dict[str, Any]) -> Objectives:
        """Stage one: refusal NLL on the next rows of the steering part (and the batch's retain NLL)."""
        size = len(batch["forget"]["index"])
        start = (self.global_step * size) % len(self.rs_rows)
        rows = [self.rs_rows[(start + k) % len(self.rs_rows)] for k in range(min(size, len(self.rs_rows)))]
        idk = self.refusal_batch(torch.tensor(rows))
        retain = self.retain_term(batch["retain"], "nll") if self.rs_retain else None
        return Objectives(forget=nll(self(idk), idk["labels"]), retain=retain, logs={"stage": torch.tensor(1.0)})

    # ---------------------------------------------------------------- stage two
    @torch.no_grad()
    def sample(self, prompts: list[Tensor]) -> tuple[Tensor, Tensor, int]:
        """``group_size`` sampled answers per prompt: ``(ids [P*G, W+T], attention mask, W)`` with the
        prompts left-padded to width ``W``; rows ``p*G .. p*G+G-1`` answer prompt ``p``."""
        from transformers import GenerationConfig

        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        batch = collate([(p, p, None, i) for i, p in enumerate(prompts)], pad, padding_side="left")
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        width = ids.shape[1]
        config = GenerationConfig(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=0,
                                  max_new_tokens=self.max_new_tokens, num_return_sequences=self.group_size,
                                  pad_token_id=pad, eos_token_id=tok.eos_token_id, use_cache=True)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        finally:
            self.model.train(was_training)
        answer_mask = completion_mask(out[:, width:], tok.eos_token_id)
        full_mask = torch.cat([mask.repeat_interleave(self.group_size, 0), answer_mask.long()], 1)
        return out, full_mask, width

    def answer_logps(self, model, ids: Tensor, mask: Tensor, width: int) -> Tensor:
        """Token log-probs ``[N, T]`` of the sampled answers ``ids[:, width:]`` (positions from the mask,
        as ``generate`` numbers left-padded prompts)."""
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
        logits = logits[:, width - 1 : -1].float()
        return -F.cross_entropy(logits.flatten(0, 1), ids[:, width:].flatten(), reduction="none").view(
            ids.shape[0], -1)

    @torch.no_grad()
    def reference_answer_logps(self, ids: Tensor, mask: Tensor, width: int) -> Tensor:
        """:meth:`answer_logps` of the start model: the frozen copy, or with LoRA the base with its
        adapters off, in eval mode (dropout off), as :meth:`UnlearningModule.reference_logits`."""
        if not self._lora_applied:
            return self.answer_logps(self.reference_model, ids, mask, width)
        was_training = self.model.training
        self.model.eval()
        try:
            with self.adapters_disabled():
                return self.answer_logps(self.model, ids, mask, width)
        finally:
            self.model.train(was_training)

    def objectives(self, batch: dict[str, Any]) -> Objectives:
        if self.global_step < self.rs_steps:
            return self.steering_objectives(batch)
        from lit_unlearn.evaluation.refusal import is_refusal

        forget_rows = batch["forget"]["index"].tolist()
        retain_rows = batch["retain"]["index"].tolist()
        items = [self.questions["forget"][i] for i in forget_rows] + [self.questions["retain"][i] for i in retain_rows]
        is_forget = [k < len(forget_rows) for k in range(len(items))]
        ids, mask, width = self.sample([p for p, _ in items])
        G = self.group_size
        answers = self.tokenizer.batch_decode(ids[:, width:], skip_special_tokens=True)
        flags = [f for f in is_forget for _ in range(G)]
        references = [None if f else r for (_, r), f in zip(items, is_forget) for _ in range(G)]
        refused = [is_refusal(a) for a in answers]
        rewards = rule_rewards(answers, flags, references, refused, self.scorer, self.boundary_refusal)
        advantages = (group_advantages(rewards, G) if self.advantage == "group" else batch_advantages(rewards))
        advantages = advantages.to(self.device)
        answer_mask = mask[:, width:].float()
        logps = self.answer_logps(self.model, ids, mask, width)
        ref_logps = self.reference_answer_logps(ids, mask, width)
        loss, kl = grpo_loss(logps, ref_logps, advantages, answer_mask, self.beta)
        n_f = len(forget_rows) * G
        f = torch.tensor(flags)
        share = torch.tensor(refused, dtype=torch.float32)
        logs = {"stage": torch.tensor(2.0), "reward_forget": rewards[f].mean(), "reward_boundary": rewards[~f].mean(),
                "refusal_forget": share[f].mean(), "refusal_boundary": share[~f].mean(), "kl": kl.mean()}
        return Objectives(forget=loss[:n_f], retain=loss[n_f:], logs=logs)
