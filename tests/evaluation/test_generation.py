"""Generation inside the model's context (clamped budget, prompts left-truncated, one warning) and
the sample of generations each set keeps (SuiteResult.generations, generations.json)."""

import json
import warnings
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lit_unlearn import GradDiff, RunSummary, TOFUSuite
from lit_unlearn.evaluation import greedy_generate
from lit_unlearn.evaluation.engine import Evaluator, GenerationLimit, generation_budget, model_context
from lit_unlearn.evaluation.rwku_probes import generate_texts
from lit_unlearn.models import load_causal_lm
from tests.helpers import adamw, quiet_trainer, tiny_data
from tests.helpers.training import save_random_llama

CONTEXT = 32  # the tiny benchmark's prompts have 11-17 tokens, prompt + answer at most 27
SETS = ["forget", "retain", "holdout", "neighbor"]


@pytest.fixture(scope="module")
def short_model_dir(tmp_path_factory, tokenizer) -> str:
    """A random 2-layer Llama with 32 positions and the tiny benchmark's tokenizer."""
    return save_random_llama(tokenizer, tmp_path_factory.mktemp("short_llama"), positions=CONTEXT)


@pytest.fixture(scope="module")
def model(short_model_dir):
    return load_causal_lm(short_model_dir).eval()


@pytest.fixture(scope="module")
def data():
    dm = tiny_data(max_eval_examples=8)
    dm.setup()
    return dm


def clamp_warnings(record) -> list[str]:
    return [str(w.message) for w in record
            if issubclass(w.category, UserWarning) and "run past the model's context" in str(w.message)]


def evaluator(model, dm, batch_size: int, keep: int = 20) -> Evaluator:
    records = dm.records_for("test")
    return Evaluator(model, dm.tokenizer, dm, records, batch_size, 200, nullcontext(), False, keep_generations=keep)


def prompts_of(ev: Evaluator, name: str) -> list[torch.Tensor]:
    data = ev.encode(name, ev.rows(name))
    return [data[i][0][: int((data[i][1] != -100).nonzero()[0])] for i in range(len(data))]


def unclamped(model, tok, prompt: torch.Tensor, n: int = 200) -> list[int]:
    """What greedy generation gives without the clamp (a rotary model runs past its context)."""
    return greedy_generate(model, [prompt], tok.pad_token_id, tok.eos_token_id, n)[0]


def test_context_of_a_config_and_the_budget():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=24, n_embd=8, n_layer=1, n_head=1))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=40))
    assert model_context(gpt2) == 24 and model_context(llama) == 40
    assert model_context(torch.nn.Linear(1, 1)) is None  # no config: no clamp
    assert generation_budget(llama, 10, 200) == 30 and generation_budget(llama, 10, 5) == 5
    assert generation_budget(llama, 40, 5) == 0 and generation_budget(gpt2, 20, 200) == 4
    assert generation_budget(torch.nn.Linear(1, 1), 10_000, 200) == 200


def test_suite_generation_stays_inside_the_context_warns_once_and_keeps_a_sample(model, data):
    tok = data.tokenizer
    suite = TOFUSuite(extra_sets=["neighbor"], max_new_tokens=200, batch_size=1, keep_generations=5, progress=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = suite.run(model, tok, data, "test")
    ev = evaluator(model, data, 1)
    lengths = {name: [len(p) for p in prompts_of(ev, name)] for name in SETS}
    assert min(min(v) for v in lengths.values()) == 11 and max(max(v) for v in lengths.values()) == 17
    # one warning for the whole run (4 sets, 32 batches), with the numbers and the option to change
    messages = clamp_warnings(record)
    assert len(messages) == 1, messages
    assert "`max_new_tokens`=200" in messages[0]
    assert "32 positions, its config's `max_position_embeddings`" in messages[0]
    low, high = CONTEXT - max(lengths["forget"]), CONTEXT - min(lengths["forget"])
    assert f"effective budget of {low}-{high} new tokens" in messages[0] and "suite's `max_new_tokens`" in messages[0]
    # the sample: the first 5 rows of every set, in row order
    assert list(result.generations) == SETS
    past = 0
    for name in SETS:
        kept, rows = result.generations[name], ev.rows(name)
        assert len(rows) == 8 and len(kept) == 5
        assert all(set(g) == {"prompt", "reference", "generated"} for g in kept)
        answers = [data.records_for("test")[name].rows[r]["answer"] for r in rows[:5]]
        assert [g["reference"] for g in kept] == answers
        for g, prompt in zip(kept, prompts_of(ev, name)[:5]):
            assert g["prompt"] == tok.decode(prompt) and g["prompt"].startswith("Question:")
            # each row got exactly context - prompt length new tokens of the unclamped continuation
            budget = CONTEXT - len(prompt)
            full = unclamped(model, tok, prompt)
            assert g["generated"] == tok.decode(full[:budget], skip_special_tokens=True).strip()
            past += len(full) > budget
    assert past >= 15  # without the clamp, generation runs past the context on (nearly) every row


def test_batched_rows_share_their_longest_prompts_budget(model, data):
    tok = data.tokenizer
    ev = evaluator(model, data, batch_size=4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        preds = {name: ev.generate(name, ev.rows(name))[0] for name in SETS}
    assert len(clamp_warnings(record)) == 1  # one per Evaluator, not per set or batch
    for name in SETS:
        prompts = prompts_of(ev, name)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), 4):
            batch = order[start : start + 4]
            budget = CONTEXT - max(len(prompts[i]) for i in batch)  # no padded row runs past the context
            assert all(budget <= CONTEXT - len(prompts[i]) for i in batch)
            for i in batch:
                want = tok.decode(unclamped(model, tok, prompts[i])[:budget], skip_special_tokens=True).strip()
                assert preds[name][i] == want
        assert ev.generations[name][0]["generated"] == preds[name][0]


def test_a_prompt_that_fills_the_context_is_left_truncated(model, data):
    tok = data.tokenizer
    context = 14  # the prompts have 11-17 tokens
    model.config.max_position_embeddings = context  # as a model of 14 positions
    try:
        ev = evaluator(model, data, batch_size=1)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            preds, _ = ev.generate("forget", ev.rows("forget"), max_new_tokens=50)
    finally:
        model.config.max_position_embeddings = CONTEXT
    prompts = prompts_of(ev, "forget")
    cut = [p for p in prompts if len(p) >= context]
    assert cut and len(cut) < len(prompts)
    messages = clamp_warnings(record)
    assert len(messages) == 1
    assert f"{len(cut)} prompt(s) of 14+ tokens are left-truncated to their last 13 tokens" in messages[0]
    for pred, prompt, kept in zip(preds, prompts, ev.generations["forget"]):
        seen = prompt[-(context - 1):]  # the end of the prompt, next to the answer
        budget = context - len(seen)  # 1 for a truncated prompt
        assert pred == tok.decode(unclamped(model, tok, seen)[:budget], skip_special_tokens=True).strip()
        assert kept["prompt"] == tok.decode(seen)


def test_rwku_text_generation_uses_the_same_clamp(model, data):
    tok = data.tokenizer
    texts = ["Question: Where was Jiabrux Griqynd born?\nAnswer:", "Question: Who is it?\nAnswer:"]
    ids = [torch.tensor(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    limit = GenerationLimit(model)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = generate_texts(model, tok, texts, 100, batch_size=1, limit=limit, option="fluency_max_new_tokens")
        again = generate_texts(model, tok, texts, 100, batch_size=1, limit=limit, option="fluency_max_new_tokens")
        generate_texts(model, tok, texts, 5, batch_size=1)  # fits: no warning
    messages = clamp_warnings(record)
    assert len(messages) == 1 and "`fluency_max_new_tokens`=100" in messages[0]
    assert out == again
    for text, prompt in zip(out, ids):
        assert text == tok.decode(unclamped(model, tok, prompt)[: CONTEXT - len(prompt)], skip_special_tokens=True)


def test_keep_generations_zero_keeps_none_and_must_be_a_count(model, data):
    suite = TOFUSuite(max_new_tokens=8, keep_generations=0, progress=False)
    assert suite.run(model, data.tokenizer, data, "test").generations == {}
    with pytest.raises(ValueError, match="keep_generations"):
        TOFUSuite(keep_generations=-1)


def test_trainer_test_writes_generations_json_beside_results(short_model_dir, tmp_path):
    module = GradDiff(model=short_model_dir, optimizer=adamw(),
                      suite=TOFUSuite(max_new_tokens=200, keep_generations=3, batch_size=8, progress=False))
    trainer = quiet_trainer(logger=TensorBoardLogger(tmp_path, name="runs"),
                            callbacks=[RunSummary(gold=False, verbose=False)])
    with pytest.warns(UserWarning, match="run past the model's context") as record:
        trainer.test(module, datamodule=tiny_data(max_eval_examples=8), verbose=False)
    assert len(clamp_warnings(record)) == 1
    log_dir = Path(trainer.log_dir)
    assert (log_dir / "results.json").is_file()
    written = json.loads((log_dir / "generations.json").read_text())
    assert written == module.suite_result.generations
    assert sorted(written) == ["forget", "holdout", "retain"]
    for rows in written.values():
        assert len(rows) == 3 and all(set(r) == {"prompt", "reference", "generated"} for r in rows)
        assert all(r["prompt"].startswith("Question:") and r["reference"] for r in rows)
