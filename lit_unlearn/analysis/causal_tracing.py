"""Causal tracing: which layers' MLPs carry the facts of a set of examples.

For each example, the subject tokens' input embeddings are corrupted with Gaussian noise
(``noise_scale`` x the embedding matrix's standard deviation). With the clean answer
probability ``p_clean`` and the corrupted one ``p_corrupt``, layer ℓ's indirect effect is
``(p_restored - p_corrupt) / (p_clean - p_corrupt)`` clipped to [0, 1], where
``p_restored`` is the corrupted run with layer ℓ's MLP output at the subject tokens set back
to its clean value. Probabilities are length-normalised over the answer tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from lit_unlearn.models import decoder_layers, layer_mlp
from lit_unlearn.objectives import nll


def subject_mask(input_ids: Tensor, labels: Tensor, subject_ids: list[list[int]] | None) -> Tensor:
    """``[B, T]`` bool: the prompt tokens of each row's subject (its token sequence found in
    the prompt; the whole prompt when no subject is given or found)."""
    prompt = labels == -100
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for b in range(input_ids.shape[0]):
        ids = input_ids[b].tolist()
        sub = subject_ids[b] if subject_ids else None
        found = False
        if sub:
            n = len(sub)
            for t in range(len(ids) - n + 1):
                if ids[t : t + n] == sub and bool(prompt[b, t]):
                    mask[b, t : t + n] = True
                    found = True
        if not found:
            mask[b] = prompt[b]
    return mask


def _answer_prob(model, batch: dict[str, Tensor], embeds: Tensor) -> Tensor:
    logits = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], use_cache=False).logits
    return torch.exp(-nll(logits, batch["labels"]))


@torch.no_grad()
def causal_trace(model, batches: Iterable[dict[str, Tensor]], noise_scale: float = 3.0, seed: int = 0,
                 min_effect: float = 1e-3) -> Tensor:
    """Mean indirect effect of every layer's MLP, ``[num_layers]``, each in [0, 1].

    Args:
        model: a causal LM (HF ``PreTrainedModel``).
        batches: ``TokenBatch`` dicts with ``subject_mask`` ``[B, T]`` (see :func:`subject_mask`).
        noise_scale: noise std as a multiple of the embeddings' std (3, as in ROME).
        seed: seed of the noise.
        min_effect: examples whose corruption moves the answer probability less than this
            are skipped (their effect is undefined).
    """
    was_training = model.training
    model.eval()
    layers = decoder_layers(model)
    embed = model.get_input_embeddings()
    sigma = noise_scale * embed.weight.float().std()
    device = embed.weight.device
    g = torch.Generator(device="cpu").manual_seed(seed)
    total = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            clean = embed(batch["input_ids"])
            mask = batch["subject_mask"].unsqueeze(-1).to(clean.dtype)
            noise = torch.randn(clean.shape, generator=g).to(device=device, dtype=clean.dtype) * sigma
            corrupted = clean + noise * mask
            clean_mlp: list[Tensor] = []
            hooks = [layer_mlp(layer).register_forward_hook(lambda m, a, out, store=clean_mlp: store.append(out))
                     for layer in layers]
            p_clean = _answer_prob(model, batch, clean)
            for h in hooks:
                h.remove()
            p_corrupt = _answer_prob(model, batch, corrupted)
            gap = p_clean - p_corrupt
            keep = gap > min_effect
            if not keep.any():
                continue
            subject = batch["subject_mask"].unsqueeze(-1)
            for i, layer in enumerate(layers):
                def restore(module, args, out, clean=clean_mlp[i], subject=subject):
                    return torch.where(subject, clean, out)

                handle = layer_mlp(layer).register_forward_hook(restore)
                p_restored = _answer_prob(model, batch, corrupted)
                handle.remove()
                effect = ((p_restored - p_corrupt) / gap.clamp(min=1e-12)).clamp(0, 1)
                total[i] += effect[keep].double().sum().cpu()
            count += int(keep.sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("causal_trace: corrupting the subjects never changed the answer probability; "
                         "the model may not know these facts")
    return (total / count).float()
