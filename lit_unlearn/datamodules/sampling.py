"""Samplers that pair forget and retain examples, and shard evaluation without padding.

Both subclass ``DistributedSampler`` so that Lightning leaves them in place under DDP and
calls ``set_epoch`` on them; each shards itself by rank.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

SAMPLING_MODES = ("paired", "cyclic", "modular")


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class PairDataset(Dataset):
    """Indexed by ``(forget_index, retain_index | None)`` pairs (or a list of them, one whole
    batch, as the modular sampler yields), returns both items."""

    def __init__(self, forget: Dataset, retain: Dataset | None) -> None:
        self.forget, self.retain = forget, retain

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, pair):
        if isinstance(pair, list):
            return [self[p] for p in pair]
        f, r = pair
        return self.forget[f], (self.retain[r] if r is not None else None)


class ForgetRetainSampler(DistributedSampler):
    """Yields ``(forget_index, retain_index)`` pairs, reshuffled every epoch from ``seed``.

    ``paired``: one pass over the shuffled forget set, each example paired with a retain
    example drawn with replacement. ``cyclic``: one pass over the larger set, the smaller
    one cycled (reshuffled on each wrap). Without a retain set, ``retain_index`` is None.
    Under DDP each rank takes every ``world_size``-th pair, so the union of the ranks'
    batches ``k`` equals batch ``k`` of one process with a ``world_size`` times larger batch.
    """

    def __init__(self, n_forget: int, n_retain: int, mode: str = "paired", seed: int = 0) -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {mode!r}")
        world, rank = _world()
        self.n_forget, self.n_retain, self.mode = n_forget, n_retain, mode
        self.num_replicas, self.rank, self.seed, self.epoch = world, rank, seed, 0
        self.total = max(n_forget, n_retain) if (mode == "cyclic" and n_retain) else n_forget
        self.num_samples = -(-self.total // world)

    def __len__(self) -> int:
        return self.num_samples

    def pairs(self) -> list[tuple[int, int | None]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if not self.n_retain:
            forget = torch.randperm(self.n_forget, generator=g).tolist()
            return [(f, None) for f in forget]
        if self.mode == "paired":
            forget = torch.randperm(self.n_forget, generator=g).tolist()
            retain = torch.randint(self.n_retain, (self.n_forget,), generator=g).tolist()
            return list(zip(forget, retain))
        forget = _cycled(self.n_forget, self.total, g)
        retain = _cycled(self.n_retain, self.total, g)
        return list(zip(forget, retain))

    skip = 0  # items of the next epoch to leave out once (set when resuming mid-epoch)

    def __iter__(self) -> Iterator[tuple[int, int | None]]:
        pairs = self.pairs()
        pairs += pairs[: self.num_samples * self.num_replicas - len(pairs)]  # even shards under DDP
        skip, self.skip = self.skip, 0
        return iter(pairs[self.rank :: self.num_replicas][skip:])


def _cycled(n: int, total: int, g: torch.Generator) -> list[int]:
    out: list[int] = []
    while len(out) < total:
        out += torch.randperm(n, generator=g).tolist()
    return out[:total]


class ShardedEvalSampler(DistributedSampler):
    """In-order indices ``rank, rank + world, ...`` with no padding, so sums over ranks are exact."""

    def __init__(self, n: int) -> None:
        world, rank = _world()
        self.n, self.num_replicas, self.rank, self.epoch, self.shuffle = n, world, rank, 0, False
        self.num_samples = len(range(rank, n, world))

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.num_replicas))


class ModularSampler(DistributedSampler):
    """MELU's modular, entity-by-entity sampling; yields whole batches (lists of pairs).

    Each epoch visits the entities in a seeded order; each entity's forget rows (shuffled)
    form batches of at most ``batch_size`` that hold that entity only. Every batch is paired
    with as many retain rows: ``round(neighbor_fraction * n)`` drawn (with replacement) from
    the entity's neighbor rows when it has any, the rest from the general retain rows.
    Under DDP the batches go round-robin to the ranks.

    Args:
        entity_rows: entity -> forget row ids.
        neighbor_rows: entity -> row ids in the retain pool of that entity's neighbors.
        general_rows: row ids in the retain pool of general retain data.
        batch_size: forget rows per batch.
        neighbor_fraction: share of each batch's retain rows taken from the neighbors.
        seed: seed of every order and draw (with the epoch).
    """

    def __init__(self, entity_rows: dict[str, list[int]], neighbor_rows: dict[str, list[int]], general_rows: list[int],
                 batch_size: int, neighbor_fraction: float = 0.5, seed: int = 0) -> None:
        if not 0 <= neighbor_fraction <= 1:
            raise ValueError(f"neighbor_fraction must be in [0, 1], got {neighbor_fraction!r}")
        world, rank = _world()
        self.entity_rows, self.neighbor_rows, self.general_rows = entity_rows, neighbor_rows, general_rows
        self.batch_size, self.neighbor_fraction, self.seed = batch_size, neighbor_fraction, seed
        self.num_replicas, self.rank, self.epoch = world, rank, 0
        n_batches = sum(-(-len(rows) // batch_size) for rows in entity_rows.values())
        self.num_samples = -(-n_batches // world)

    def __len__(self) -> int:
        return self.num_samples

    def batches(self) -> list[list[tuple[int, int | None]]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        entities = list(self.entity_rows)
        out = []
        for e in torch.randperm(len(entities), generator=g).tolist():
            entity = entities[e]
            rows = self.entity_rows[entity]
            rows = [rows[i] for i in torch.randperm(len(rows), generator=g).tolist()]
            neighbors = self.neighbor_rows.get(entity, [])
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                n_nb = round(self.neighbor_fraction * len(chunk)) if neighbors else 0
                if not self.general_rows:
                    n_nb = len(chunk) if neighbors else 0
                picks = torch.randint(len(neighbors), (n_nb,), generator=g).tolist() if n_nb else []
                retain = [neighbors[i] for i in picks]
                n_gen = len(chunk) - n_nb
                if self.general_rows:
                    picks = torch.randint(len(self.general_rows), (n_gen,), generator=g).tolist()
                    retain += [self.general_rows[i] for i in picks]
                retain += [None] * (len(chunk) - len(retain))
                out.append(list(zip(chunk, retain)))
        return out

    skip = 0  # batches of the next epoch to leave out once (set when resuming mid-epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        batches = self.batches()
        batches += batches[: self.num_samples * self.num_replicas - len(batches)]
        skip, self.skip = self.skip, 0
        return iter(batches[self.rank :: self.num_replicas][skip:])
