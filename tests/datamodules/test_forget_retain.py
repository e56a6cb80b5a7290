import json
import warnings
from collections import Counter

import pytest
import torch

from lit_unlearn.datamodules import ForgetRetainDataModule
from lit_unlearn.datamodules.sampling import ForgetRetainSampler


def qa(n, tag):
    return [{"question": f"{tag} question {i}?", "answer": f"{tag} answer {i}.", "entity": f"{tag}{i // 2}"}
            for i in range(n)]


def make(tokenizer_dir, **kw):
    args = dict(forget=qa(6, "f"), retain=qa(20, "r"), tokenizer=tokenizer_dir, batch_size=2)
    args.update(kw)
    dm = ForgetRetainDataModule(**args)
    dm.setup("fit")
    return dm


def test_paired_batches(tiny_tokenizer_dir):
    dm = make(tiny_tokenizer_dir)
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    seen = []
    for b in batches:
        assert set(b) == {"forget", "retain"}
        for part in ("forget", "retain"):
            assert set(b[part]) >= {"input_ids", "attention_mask", "labels", "index"}
            assert b[part]["input_ids"].shape[0] == 2
        seen += b["forget"]["index"].tolist()
    assert sorted(seen) == list(range(6))  # one pass over the forget set per epoch


def test_paired_sampling_is_seeded_and_changes_per_epoch():
    a = ForgetRetainSampler(50, 200, "paired", seed=3)
    b = ForgetRetainSampler(50, 200, "paired", seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert sorted(f for f, _ in list(a)) == list(range(50))
    # retain drawn with replacement, uniformly: over many epochs every retain row appears
    counts = Counter()
    for e in range(40):
        a.set_epoch(e)
        counts.update(r for _, r in a)
    assert set(counts) == set(range(200))


def test_seed_everything_changes_the_training_order_not_the_evaluation_rows(tiny_tokenizer_dir, monkeypatch):
    """``--seed_everything N`` adds N to the sampling seed (runs on 3 seeds differ), while the
    evaluation subsets, seeded by ``seed`` alone, stay the same rows."""
    def run(global_seed):
        if global_seed is None:
            monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
        else:
            monkeypatch.setenv("PL_GLOBAL_SEED", str(global_seed))
        dm = make(tiny_tokenizer_dir, forget=qa(12, "f"), retain=qa(40, "r"), max_eval_examples=5,
                  eval_sets={"retain": qa(40, "r")})
        order = [(b["forget"]["index"].tolist(), b["retain"]["index"].tolist()) for b in dm.train_dataloader()]
        encoded = dm.eval_encoded["retain"]
        return order, [encoded[i][0].tolist() for i in range(len(encoded))]

    default, zero, one, two = run(None), run(0), run(1), run(2)
    assert default == zero  # without seed_everything: as seed 0
    assert len({str(o) for o, _ in (zero, one, two)}) == 3
    assert len(zero[1]) == 5 and zero[1] == one[1] == two[1]
    assert one[0] == [(f, r) for f, r in _batches(ForgetRetainSampler(12, 40, "paired", seed=1), 2)]


def _batches(sampler, size):
    pairs = list(sampler)
    return [([f for f, _ in pairs[i:i + size]], [r for _, r in pairs[i:i + size]]) for i in range(0, len(pairs), size)]


def test_cyclic_sampling_covers_the_larger_set():
    s = ForgetRetainSampler(5, 12, "cyclic", seed=0)
    pairs = list(s)
    assert len(pairs) == 12
    assert sorted(r for _, r in pairs) == list(range(12))
    forget = [f for f, _ in pairs]
    assert Counter(forget[:5]) == Counter(range(5)) and Counter(forget[5:10]) == Counter(range(5))


def test_ddp_shards_union_equals_single_process():
    single = list(ForgetRetainSampler(10, 30, "paired", seed=1))
    shards = []
    for rank in range(2):
        s = ForgetRetainSampler(10, 30, "paired", seed=1)
        s.num_replicas, s.rank = 2, rank
        s.num_samples = 5
        shards.append(list(s))
    # batch k (size 2) on each rank == batch k (size 4) of one process
    for k in range(2):
        merged = sorted(shards[0][2 * k: 2 * k + 2] + shards[1][2 * k: 2 * k + 2])
        assert merged == sorted(single[4 * k: 4 * k + 4])


def test_named_eval_sets_and_subsets(tiny_tokenizer_dir, tmp_path):
    holdout = tmp_path / "holdout.json"
    holdout.write_text(json.dumps(qa(9, "h")))
    dm = make(tiny_tokenizer_dir, eval_sets={"forget": "forget", "retain": "retain", "holdout": str(holdout)},
              max_eval_examples=5)
    assert dm.val_set_names == ["forget", "retain", "holdout"]
    assert [len(d) for d in dm.eval_encoded.values()] == [5, 5, 5]
    loaders = dm.val_dataloader()
    assert len(loaders) == 3
    assert next(iter(loaders[2]))["input_ids"].shape[0] == 5
    assert dm.test_set_names == dm.val_set_names


def test_forget_only(tiny_tokenizer_dir):
    dm = make(tiny_tokenizer_dir, retain=None)
    batch = next(iter(dm.train_dataloader()))
    assert batch["retain"] is None
    assert dm.val_set_names == ["forget"]


def test_bad_arguments(tiny_tokenizer_dir, tmp_path):
    for name, value in [("batch_size", 0), ("batch_size", -1), ("max_length", 0), ("eval_batch_size", 0)]:
        with pytest.raises(ValueError, match=f"`{name}` must be a positive integer"):
            ForgetRetainDataModule(forget=qa(2, "f"), **{name: value})
    with pytest.raises(ValueError, match="`sampling` must be one of"):
        ForgetRetainDataModule(forget=qa(2, "f"), sampling="random")
    with pytest.raises(ValueError, match="the forget set .* is empty"):
        ForgetRetainDataModule(forget=[])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty.jsonl'\\) is empty"):
        ForgetRetainDataModule(forget=str(tmp_path / "empty.jsonl"))
    with pytest.raises(FileNotFoundError, match="retain: data file '.*missing.json' does not exist"):
        ForgetRetainDataModule(forget=qa(2, "f"), retain=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="forget: row 1 of the in-memory forget list has no field 'answer'"):
        ForgetRetainDataModule(forget=[{"question": "a", "answer": "b"}, {"question": "c"}])
    with pytest.raises(ValueError, match="eval_sets.holdout: row 0 .* has no field 'answer'"):
        ForgetRetainDataModule(forget=qa(2, "f"), eval_sets={"holdout": [{"question": "q"}]})


def test_max_length_too_short_fails_at_setup(tiny_tokenizer_dir):
    dm = ForgetRetainDataModule(forget=qa(2, "f"), tokenizer=tiny_tokenizer_dir, max_length=3)
    with pytest.raises(ValueError, match="max_length=3 leaves no answer token for row 0"):
        dm.setup("fit")


def test_overlap_warns_with_count():
    forget = qa(4, "f")
    with pytest.warns(UserWarning, match="2 retain record\\(s\\) .* also appear in the forget set"):
        ForgetRetainDataModule(forget=forget, retain=qa(5, "r") + forget[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ForgetRetainDataModule(forget=forget, retain=qa(5, "r"))


def test_fields_mapping(tiny_tokenizer_dir):
    rows = [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(3)]
    dm = ForgetRetainDataModule(forget=rows, tokenizer=tiny_tokenizer_dir,
                                fields={"question": "prompt", "answer": "response"})
    dm.setup()
    assert len(dm.forget_set) == 3
    assert (torch.as_tensor(dm.forget_set[0][1]) != -100).any()
