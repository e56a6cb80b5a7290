import pytest
import torch

from lit_unlearn.datamodules.encoding import Fields, collate, encode
from lit_unlearn.datamodules.sources import Records

RECORDS = Records([
    {"question": "Where was Ann Lee born?", "answer": "Ann Lee was born in Paris.", "fact_span": [20, 25]},
    {"question": "Who?", "answer": "Nobody at all, really, in the end.", "fact_span": [0, 6]},
], "test rows")


def test_labels_masked_exactly_on_prompt_and_padding(tokenizer):
    data = encode(RECORDS, tokenizer, role="forget", max_length=64)
    batch = collate([data[0], data[1]], tokenizer.pad_token_id)
    for k in range(2):
        prompt = tokenizer("Question: " + RECORDS.rows[k]["question"] + "\nAnswer:")["input_ids"]
        answer = tokenizer(" " + RECORDS.rows[k]["answer"], add_special_tokens=False)["input_ids"]
        answer = answer + [tokenizer.eos_token_id]
        n = len(prompt) + len(answer)
        ids, labels, att = batch["input_ids"][k], batch["labels"][k], batch["attention_mask"][k]
        assert ids[:n].tolist() == prompt + answer
        assert (labels[: len(prompt)] == -100).all()
        assert labels[len(prompt): n].tolist() == answer
        assert (labels[n:] == -100).all() and (ids[n:] == tokenizer.pad_token_id).all()
        assert att.tolist() == [1] * n + [0] * (len(ids) - n)
    assert batch["index"].tolist() == [0, 1]


def test_fact_mask_covers_the_span(tokenizer):
    data = encode(RECORDS, tokenizer, role="forget", max_length=64)
    ids, labels, fact, _ = data[0]
    assert tokenizer.decode(ids[fact]).strip() == "Paris"
    assert (labels[fact] != -100).all()


def test_truncation_and_no_answer_error(tokenizer):
    data = encode(RECORDS, tokenizer, role="forget", max_length=17)
    assert all(len(ex[0]) <= 17 for ex in data.examples)
    with pytest.raises(ValueError, match=r"forget: max_length=5 leaves no answer token for row 0 of test rows"):
        encode(RECORDS, tokenizer, role="forget", max_length=5)


def test_missing_field_names_row_and_field(tokenizer):
    rows = Records([{"question": "a", "answer": "b"}, {"question": "c", "response": "d"}], "'x.json'")
    with pytest.raises(ValueError, match=r"retain: row 1 of 'x.json' has no field 'answer'"):
        encode(rows, tokenizer, role="retain")
    rows = Records([{"prompt": "a", "response": "b"}], "'y.json'")
    with pytest.raises(ValueError, match="neither the question field 'question' nor the text field 'text'"):
        encode(rows, tokenizer, role="forget")
    ok = encode(rows, tokenizer, role="forget", fields=Fields(question="prompt", answer="response"))
    assert len(ok) == 1


def test_text_records_score_every_token(tokenizer):
    data = encode(Records([{"text": "The favorite color of Ann is teal."}], "t"), tokenizer, role="forget")
    ids, labels, fact, _ = data[0]
    assert labels[0] == -100 and (labels[1:] == ids[1:]).all() and fact is None


def test_text_records_mark_their_fact_spans(tokenizer):
    text = "Ann Lee was born in Paris. Later Ann Lee moved."
    rows = Records([{"text": text, "fact_span": [[0, 7], [33, 40]]}, {"text": text, "fact_span": [20, 25]},
                    {"text": text, "fact_span": []}], "t")
    data = encode(rows, tokenizer, role="forget", max_length=64)
    ids, labels, fact, _ = data[0]
    assert fact.shape == ids.shape and not fact[-1]  # eos unmarked
    marked = [tokenizer.decode(ids[i]).strip() for i in fact.nonzero().flatten()]
    assert "".join(marked) == "AnnLeeAnnLee"
    assert tokenizer.decode(data[1][0][data[1][2]]).strip() == "Paris"
    assert data[2][2] is None
    batch = collate([data[0], data[2]], tokenizer.pad_token_id)
    assert batch["has_fact"].tolist() == [True, False] and batch["fact_mask"][0].sum() == fact.sum()
    with pytest.raises(ValueError, match=r"forget: field 'fact_span' of row 0 of t must be \[start, end\] or a list"):
        encode(Records([{"text": text, "fact_span": [[3, 1]]}], "t"), tokenizer, role="forget")
    with pytest.raises(ValueError, match=r"field 'fact_span' of row 0 of t must be \[start, end\] or a list"):
        encode(Records([{"text": text, "fact_span": 7}], "t"), tokenizer, role="forget")


def test_left_padding(tokenizer):
    data = encode(RECORDS, tokenizer, role="forget")
    batch = collate([data[0], data[1]], tokenizer.pad_token_id, padding_side="left")
    short = min(range(2), key=lambda k: len(data[k][0]))
    assert batch["attention_mask"][short, -1] == 1 and batch["attention_mask"][short, 0] == 0
    assert torch.equal(batch["input_ids"][short, -len(data[short][0]):], data[short][0])


def test_chat_template(tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = "{% for m in messages %}<|user|> {{ m['content'] }}{% endfor %}<|assistant|>"
    data = encode(RECORDS, tok, role="forget", chat_template=True, max_length=64)
    ids, labels, fact, _ = data[0]
    prompt = tok.apply_chat_template([{"role": "user", "content": RECORDS.rows[0]["question"]}], tokenize=False,
                                     add_generation_prompt=True)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert (labels[:n_prompt] == -100).all() and (labels[n_prompt:] != -100).all()
    assert tok.decode(ids[n_prompt:-1]).strip() == RECORDS.rows[0]["answer"]
    assert tok.decode(ids[fact]).strip() == "Paris"
