"""Samplers that pair forget and retain examples, and shard evaluation without padding.

Both subclass ``DistributedSampler`` so that Lightning leaves them in place under DDP and
calls ``set_epoch`` on them; each shards itself by rank.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

SAMPLING_MODES = ("paired", "cyclic")


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class PairDataset(Dataset):
    """Indexed by ``(forget_index, retain_index | None)`` pairs, returns both items."""

    def __init__(self, forget: Dataset, retain: Dataset | None) -> None:
        self.forget, self.retain = forget, retain

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, pair: tuple[int, int | None]):
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

    def __iter__(self) -> Iterator[tuple[int, int | None]]:
        pairs = self.pairs()
        pairs += pairs[: self.num_samples * self.num_replicas - len(pairs)]  # even shards under DDP
        return iter(pairs[self.rank :: self.num_replicas])


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
