from collections import Counter

import pytest

from lit_unlearn import FictitiousPeople
from lit_unlearn.datamodules import ForgetRetainDataModule
from lit_unlearn.datamodules.sampling import ModularSampler


def test_modular_batches_on_the_benchmark():
    dm = FictitiousPeople("small", sampling="modular", batch_size=4, neighbor_fraction=0.5)
    dm.setup()
    forget_rows = dm.forget_records.rows
    seen = Counter()
    for batch in dm.train_dataloader():
        idx = batch["forget"]["index"].tolist()
        entities = {forget_rows[i]["entity"] for i in idx}
        assert len(entities) == 1  # one entity per step
        seen.update(idx)
        assert batch["retain"]["input_ids"].shape[0] == len(idx)
    assert sorted(seen) == list(range(len(forget_rows))) and set(seen.values()) == {1}


def test_modular_sampler_ratio_and_sources():
    entity_rows = {"a": [0, 1, 2, 3, 4, 5], "b": [6, 7], "c": [8]}
    neighbor_rows = {"a": [100, 101], "b": [200]}
    general = list(range(50))
    s = ModularSampler(entity_rows, neighbor_rows, general, batch_size=4, neighbor_fraction=0.5, seed=0)
    batches = list(s)
    assert len(batches) == len(s) == 4  # a: 4 + 2, b: 2, c: 1
    owner = {r: e for e, rows in entity_rows.items() for r in rows}
    for b in batches:
        forget = [f for f, _ in b]
        entity = owner[forget[0]]
        assert {owner[f] for f in forget} == {entity}
        retain = [r for _, r in b]
        from_neighbors = [r for r in retain if r >= 100]
        assert set(from_neighbors) <= set(neighbor_rows.get(entity, []))
        expected = round(0.5 * len(b)) if entity in neighbor_rows else 0
        assert len(from_neighbors) == expected
        assert all(r in general for r in retain if r < 100)
    s.set_epoch(1)
    assert list(s) != batches  # reshuffled per epoch, still seeded
    assert list(ModularSampler(entity_rows, neighbor_rows, general, 4, 0.5, seed=0)) == batches


def test_modular_needs_the_entity_field():
    rows = [{"question": "q?", "answer": "a."}]
    with pytest.raises(ValueError, match="has no 'entity' field, which sampling='modular' groups by"):
        ForgetRetainDataModule(forget=rows, sampling="modular")
