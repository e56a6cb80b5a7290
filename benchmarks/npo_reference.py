"""NPO time per step: cached reference log-probs (lit-unlearn's default) vs a reference
forward on every forget batch (``cache_reference=False``, what most research code does).

Both runs train the same model on the same batches; they alternate and repeat, and the
ratio pairs the runs of one repeat and takes the median. The one-off cost of caching (one
pass over the forget set at fit start) is reported separately and included in "per step
incl. caching", amortised over the run's steps.

    python benchmarks/npo_reference.py [--steps 60] [--repeats 3] [--preset small] [--lora]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from functools import partial

import torch
from lightning.pytorch import Trainer, seed_everything
from overhead import StepTimer  # benchmarks/ is on sys.path when a script in it runs

from lit_unlearn import NPO, FictitiousPeople


class Timer(StepTimer):
    """``StepTimer`` plus the seconds from fit start to the first batch (setup and caching)."""

    def __init__(self, warmup: int) -> None:
        super().__init__(warmup)
        self.fit_start, self.cache_s = 0.0, 0.0

    def on_fit_start(self, trainer, module):
        self.fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0 and not self.cache_s:
            self.cache_s = time.perf_counter() - self.fit_start
        super().on_train_batch_start(trainer, module, batch, batch_idx)


def run(model: str, preset: str, cache: bool, steps: int, batch_size: int, lora: bool) -> Timer:
    seed_everything(0)
    timer = Timer(warmup=5)
    module = NPO(model=model, cache_reference=cache, optimizer=partial(torch.optim.AdamW, lr=1e-4),
                 evaluate_at_start=False, lora={"r": 16} if lora else None)
    data = FictitiousPeople(preset, "forget10", batch_size=batch_size, sampling="cyclic", eval_sets=["forget"])
    trainer = Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=data)
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lora", action="store_true", help="LoRA adapters: the reference is the base, adapters off")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = f"builtin:{args.preset}/subject"
    rows = {True: [], False: []}
    ratios = []
    for _ in range(args.repeats):
        pair = {cache: run(model, args.preset, cache, args.steps, args.batch_size, args.lora)
                for cache in (True, False)}
        for cache, timer in pair.items():
            rows[cache].append(timer)
        ratios.append(pair[True].per_step() / pair[False].per_step())
    print(f"\nNPO on {model}, batch {args.batch_size}+{args.batch_size}, {args.steps} steps x {args.repeats} repeats"
          + (", LoRA r 16" if args.lora else ""))
    print("| reference | ms/step (median) | setup + caching s | ms/step incl. caching |")
    print("|---|---|---|---|")
    for cache, name in ((False, "forward every step"), (True, "cached log-probs")):
        per = statistics.median(t.per_step() for t in rows[cache]) * 1e3
        setup = statistics.median(t.cache_s for t in rows[cache])
        print(f"| {name} | {per:.1f} | {setup:.2f} | {per + setup * 1e3 / args.steps:.1f} |")
    print(f"\ncached / every-step time per step: {statistics.median(ratios):.3f}x "
          f"(runs: {', '.join(f'{r:.3f}' for r in ratios)}; goal <= 0.85x)")


if __name__ == "__main__":
    main()
