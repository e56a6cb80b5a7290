"""Time per GradDiff step: a hand-written PyTorch loop, lit-unlearn, and lit-unlearn with callbacks.

All rows run the same model (the embedded benchmark's ``builtin:small/subject`` by
default), the same batches (the datamodule's training loader) and the same optimizer.
Runs are interleaved and repeated; each run's time per step is the mean over its steps
(so periodic work such as an evaluation every n steps counts in full).
Ratios pair the rows of one repeat (run back to back) and take the median over repeats,
so drifting machine load cancels; the table also shows every run.

    python benchmarks/overhead.py [--steps 120] [--repeats 5] [--preset small]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from functools import partial

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from lit_unlearn import DivergenceGuard, DualVariable, FictitiousPeople, GradDiff, GradientProjection
from lit_unlearn.callbacks import StabilityGap
from lit_unlearn.models import load_causal_lm
from lit_unlearn.objectives import gradient_ascent, nll


class StepTimer(Callback):
    """Wall time of each training step after ``warmup`` steps (data loading included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._last = warmup, [], None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self._last is None and trainer.global_step >= self.warmup:
            self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self._last is not None:
            now = time.perf_counter()
            self.times.append(now - self._last)
            self._last = now

    def per_step(self) -> float:
        return statistics.fmean(self.times)  # amortised: periodic work (evaluations) counts


def data_for(preset: str, batch_size: int) -> FictitiousPeople:
    data = FictitiousPeople(preset, "forget10", batch_size=batch_size, sampling="cyclic",
                            eval_sets=["forget", "retain", "neighbor"])
    data.setup("fit")
    return data


def run_library(model: str, preset: str, steps: int, warmup: int, batch_size: int, lr: float,
                callbacks=()) -> float:
    seed_everything(0, verbose=False)
    timer = StepTimer(warmup)
    module = GradDiff(model=model, optimizer=partial(torch.optim.AdamW, lr=lr), evaluate_at_start=False)
    with tempfile.TemporaryDirectory() as logs:  # TensorBoard logging on, as in a real run
        trainer = Trainer(max_steps=warmup + steps, logger=TensorBoardLogger(logs), enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                          num_sanity_val_steps=0, callbacks=[*callbacks, timer], log_every_n_steps=10)
        trainer.fit(module, datamodule=data_for(preset, batch_size))
    return timer.per_step()


class BareGradDiff(LightningModule):
    """GradDiff written directly as a LightningModule: Lightning's own cost, without lit-unlearn."""

    def __init__(self, model: str, lr: float) -> None:
        super().__init__()
        self.net, self.lr = load_causal_lm(model), lr

    def training_step(self, batch, batch_idx):
        f, r = batch["forget"], batch["retain"]
        logits_f = self.net(input_ids=f["input_ids"], attention_mask=f["attention_mask"], use_cache=False).logits
        logits_r = self.net(input_ids=r["input_ids"], attention_mask=r["attention_mask"], use_cache=False).logits
        return gradient_ascent(logits_f, f["labels"]).mean() + nll(logits_r, r["labels"]).mean()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=self.lr)


def run_bare(model: str, preset: str, steps: int, warmup: int, batch_size: int, lr: float) -> float:
    seed_everything(0, verbose=False)
    timer = StepTimer(warmup)
    with tempfile.TemporaryDirectory() as logs:
        trainer = Trainer(max_steps=warmup + steps, logger=TensorBoardLogger(logs), enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                          num_sanity_val_steps=0, callbacks=[timer], log_every_n_steps=10)
        trainer.fit(BareGradDiff(model, lr), train_dataloaders=data_for(preset, batch_size).train_dataloader())
    return timer.per_step()


def timed_loop(net, opt, loader_factory, forget_loss, steps: int, warmup: int) -> tuple[list[float], list[int]]:
    """A hand-written training loop: per forget/retain batch, ``forget_loss(logits, forget batch)``
    plus the retain NLL, backward, step. Returns each timed step's seconds and token count."""
    done, last, times, tokens = 0, None, [], []
    while done < warmup + steps:
        for batch in loader_factory():
            if done == warmup:
                last = time.perf_counter()
            f, r = batch["forget"], batch["retain"]
            logits_f = net(input_ids=f["input_ids"], attention_mask=f["attention_mask"], use_cache=False).logits
            logits_r = net(input_ids=r["input_ids"], attention_mask=r["attention_mask"], use_cache=False).logits
            loss = forget_loss(logits_f, f) + nll(logits_r, r["labels"]).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            done += 1
            if last is not None:
                now = time.perf_counter()
                times.append(now - last)
                tokens.append(int(f["attention_mask"].sum() + r["attention_mask"].sum()))
                last = now
            if done == warmup + steps:
                break
    return times, tokens


def run_plain(model: str, preset: str, steps: int, warmup: int, batch_size: int, lr: float) -> float:
    """What a researcher writes by hand: the same forward passes, loss, backward and step."""
    seed_everything(0, verbose=False)
    net = load_causal_lm(model)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    loader = data_for(preset, batch_size).train_dataloader()
    times, _ = timed_loop(net, opt, lambda: loader, lambda logits, f: gradient_ascent(logits, f["labels"]).mean(),
                          steps, warmup)
    return statistics.fmean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    model = f"builtin:{args.preset}/subject"
    kw = dict(model=model, preset=args.preset, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
              lr=1e-5)
    variants = {
        "hand-written PyTorch": lambda: run_plain(**kw),
        "bare LightningModule": lambda: run_bare(**kw),
        "lit-unlearn GradDiff": lambda: run_library(**kw),
        "+ DualVariable": lambda: run_library(**kw, callbacks=[DualVariable(epsilon=0.1)]),
        "+ GradientProjection k=1": lambda: run_library(**kw, callbacks=[GradientProjection(k=1)]),
        "+ GradientProjection k=4": lambda: run_library(**kw, callbacks=[GradientProjection(k=4)]),
        "+ StabilityGap (defaults)": lambda: run_library(**kw, callbacks=[StabilityGap()]),
        "+ DivergenceGuard": lambda: run_library(**kw, callbacks=[DivergenceGuard()]),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved so drift in machine load hits every row
        for name, fn in variants.items():
            times[name].append(fn())
    # Each run reports its mean step time. Machine load drifts between repeats, so ratios
    # pair rows within a repeat (they run back to back) and take the median over repeats.
    med = {name: statistics.median(xs) for name, xs in times.items()}

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    plain, lib = "hand-written PyTorch", "lit-unlearn GradDiff"
    print(f"\nGradDiff step, {model}, batch {args.batch_size} forget + {args.batch_size} retain, "
          f"{args.steps} timed steps x {args.repeats} repeats, {torch.get_num_threads()} threads")
    print(f"{'loop':<28}{'ms/step':>9}{'vs plain':>10}{'vs GradDiff':>13}   all runs (ms)")
    for name, xs in times.items():
        runs = ", ".join(f"{1000 * x:.1f}" for x in xs)
        print(f"{name:<28}{1000 * med[name]:>9.2f}{ratio(name, plain):>10.3f}{ratio(name, lib):>13.3f}   {runs}")
    print(f"\nlit-unlearn / plain = {ratio(lib, plain):.3f} (goal <= 1.05; a bare LightningModule: "
          f"{ratio('bare LightningModule', plain):.3f}); DualVariable {ratio('+ DualVariable', lib):.3f}x "
          f"(goal <= 1.02); GradientProjection k=1 {ratio('+ GradientProjection k=1', lib):.3f}x (goal <= 1.6); "
          f"StabilityGap {ratio('+ StabilityGap (defaults)', lib):.3f}x (goal <= 1.3); "
          f"DivergenceGuard {ratio('+ DivergenceGuard', lib):.3f}x")

if __name__ == "__main__":
    main()
