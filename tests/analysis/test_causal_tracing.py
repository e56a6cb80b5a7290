import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lit_unlearn import FictitiousPeople
from lit_unlearn.analysis import causal_trace, subject_mask
from lit_unlearn.datamodules.encoding import collate
from lit_unlearn.models import load_causal_lm


def batches_for(data, tokenizer, n=20, size=10):
    out = []
    for start in range(0, n, size):
        rows = list(range(start, start + size))
        batch = collate([data.forget_set[i] for i in rows], data.pad_id)
        subjects = [tokenizer(" " + data.forget_records.rows[i]["entity"], add_special_tokens=False)["input_ids"]
                    for i in rows]
        batch["subject_mask"] = subject_mask(batch["input_ids"], batch["labels"], subjects)
        for k in ("fact_mask", "has_fact"):
            batch.pop(k)
        out.append(batch)
    return out


def test_subject_mask_marks_the_name_in_the_prompt(tokenizer):
    ids = torch.tensor([[5, 9, 7, 8, 3, 9, 7]])
    labels = torch.tensor([[-100, -100, -100, -100, 3, 9, 7]])
    mask = subject_mask(ids, labels, [[9, 7]])
    assert mask.tolist() == [[False, True, True, False, False, False, False]]  # not in the answer
    assert subject_mask(ids, labels, [[4, 4]]).tolist() == [[True, True, True, True, False, False, False]]


def test_trace_on_the_subject_model_ranks_every_layer(tiny_subject):
    data = FictitiousPeople("tiny")
    data.setup()
    model = load_causal_lm(tiny_subject)
    effects = causal_trace(model, batches_for(data, data.tokenizer))
    assert effects.shape == (2,)
    assert ((effects >= 0) & (effects <= 1)).all()
    assert effects.max() > 0
    assert model.training  # mode restored


def test_planted_layer_is_found_first(tiny_subject):
    """A model whose only working MLP is layer 2: restoring any other MLP changes nothing."""
    data = FictitiousPeople("tiny")
    data.setup()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(data.tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            if i != 2:
                layer.mlp.down_proj.weight.zero_()
            else:
                layer.mlp.down_proj.weight.mul_(20)  # make layer 2's MLP carry a strong signal
    effects = causal_trace(model, batches_for(data, data.tokenizer), min_effect=1e-6)
    assert int(effects.argmax()) == 2
    assert effects[[0, 1, 3]].max() == 0
