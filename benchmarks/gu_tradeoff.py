"""Forget vs retain trade-off of GradDiff with and without GradientProjection.

Sweeps the learning rate of GradDiff on forget10 of the embedded benchmark, alone and with
``GradientProjection(k=1)`` and ``(k=4)``, and prints forget and retain fact accuracy per
run, then each variant's retain fact accuracy interpolated at equal forget fact accuracy
(piecewise linear along its sweep, which is monotone in the learning rate).

    python benchmarks/gu_tradeoff.py [--preset small] [--epochs 10] [--lrs 1e-4 1.5e-4 2e-4 3e-4 5e-4]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from functools import partial

import numpy as np
import torch
from lightning.pytorch import Trainer, seed_everything

from lit_unlearn import FictitiousPeople, GradDiff, GradientProjection


def run(preset: str, lr: float, epochs: int, k: int | None) -> tuple[float, float, float]:
    seed_everything(0, verbose=False)
    module = GradDiff(model=f"builtin:{preset}/subject", optimizer=partial(torch.optim.AdamW, lr=lr, weight_decay=0.0))
    callbacks = [GradientProjection(k=k)] if k else []
    trainer = Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=10**6,
                      callbacks=callbacks)
    start = time.perf_counter()
    trainer.fit(module, datamodule=FictitiousPeople(preset, "forget10", batch_size=8, eval_sets=["forget", "retain"]))
    end = module.summary["end"]
    return end["forget/fact_acc"], end["retain/fact_acc"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 1.5e-4, 2e-4, 3e-4, 5e-4])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    variants = {"GradDiff": None, "GradDiff + GP k=1": 1, "GradDiff + GP k=4": 4}
    results: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    print(f"\nGradDiff on {args.preset} forget10, {args.epochs} epochs, AdamW; fact accuracy after unlearning")
    print(f"{'variant':<20}{'lr':>9}{'forget':>9}{'retain':>9}{'seconds':>9}")
    for name, k in variants.items():
        for lr in args.lrs:
            forget, retain, seconds = run(args.preset, lr, args.epochs, k)
            results[name].append((forget, retain, lr))
            print(f"{name:<20}{lr:>9.1e}{forget:>9.3f}{retain:>9.3f}{seconds:>9.1f}", flush=True)
    targets = [0.1, 0.2, 0.3, 0.5]
    print("\nretain fact accuracy at equal forget fact accuracy (interpolated; '-' = outside the sweep)")
    print(f"{'variant':<20}" + "".join(f"{f'forget={t}':>12}" for t in targets))
    for name, rows in results.items():
        rows = sorted(rows)  # by forget accuracy
        f = np.array([r[0] for r in rows])
        r = np.array([r[1] for r in rows])
        cells = []
        for t in targets:
            cells.append(f"{np.interp(t, f, r):>12.3f}" if f.min() <= t <= f.max() else f"{'-':>12}")
        print(f"{name:<20}" + "".join(cells))


if __name__ == "__main__":
    main()
