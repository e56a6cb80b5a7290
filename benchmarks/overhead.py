"""Time per GradDiff step through lit-unlearn against a hand-written PyTorch loop.

Both run the same model (the embedded benchmark's ``builtin:small/subject`` by default),
the same batches (the datamodule's training loader) and the same optimizer. Runs are
interleaved and repeated; the table shows the median time per step and the ratio.

    python benchmarks/overhead.py [--steps 60] [--repeats 3] [--preset small]
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
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from lit_unlearn import FictitiousPeople, GradDiff
from lit_unlearn.models import load_causal_lm
from lit_unlearn.objectives import gradient_ascent, nll


class StepTimer(Callback):
    """Wall time of the training steps after ``warmup`` steps (data loading included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.start is not None:
            self.end, self.steps = time.perf_counter(), self.steps + 1

    def per_step(self) -> float:
        return (self.end - self.start) / self.steps


def data_for(preset: str, batch_size: int) -> FictitiousPeople:
    data = FictitiousPeople(preset, "forget10", batch_size=batch_size, sampling="cyclic", eval_sets=["forget"])
    data.setup("fit")
    return data


def run_library(model: str, preset: str, steps: int, warmup: int, batch_size: int, lr: float) -> float:
    seed_everything(0, verbose=False)
    timer = StepTimer(warmup)
    module = GradDiff(model=model, optimizer=partial(torch.optim.AdamW, lr=lr), evaluate_at_start=False,
                      save_model=False)
    with tempfile.TemporaryDirectory() as logs:  # TensorBoard logging on, as in a real run
        trainer = Trainer(max_steps=warmup + steps, logger=TensorBoardLogger(logs), enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                          num_sanity_val_steps=0, callbacks=[timer], log_every_n_steps=10)
        trainer.fit(module, datamodule=data_for(preset, batch_size))
    return timer.per_step()


def run_plain(model: str, preset: str, steps: int, warmup: int, batch_size: int, lr: float) -> float:
    """What a researcher writes by hand: the same forward passes, loss, backward and step."""
    seed_everything(0, verbose=False)
    net = load_causal_lm(model)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    loader = data_for(preset, batch_size).train_dataloader()
    done, start = 0, None
    while done < warmup + steps:
        for batch in loader:
            if done == warmup:
                start = time.perf_counter()
            f, r = batch["forget"], batch["retain"]
            logits_f = net(input_ids=f["input_ids"], attention_mask=f["attention_mask"], use_cache=False).logits
            logits_r = net(input_ids=r["input_ids"], attention_mask=r["attention_mask"], use_cache=False).logits
            loss = gradient_ascent(logits_f, f["labels"]).mean() + nll(logits_r, r["labels"]).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            done += 1
            if done == warmup + steps:
                break
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    model = f"builtin:{args.preset}/subject"
    kw = dict(model=model, preset=args.preset, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
              lr=1e-5)
    plain, lib = [], []
    for _ in range(args.repeats):  # interleaved so drift in machine load hits both
        plain.append(run_plain(**kw))
        lib.append(run_library(**kw))
    p, l = statistics.median(plain), statistics.median(lib)
    print(f"\nGradDiff step, {model}, batch {args.batch_size} forget + {args.batch_size} retain, "
          f"{args.steps} timed steps x {args.repeats} repeats, {torch.get_num_threads()} threads")
    print(f"{'loop':<24}{'ms/step (median)':>18}{'ratio':>8}   all runs (ms)")
    for name, xs, ratio in (("hand-written PyTorch", plain, 1.0), ("lit-unlearn GradDiff", lib, l / p)):
        runs = ", ".join(f"{1000 * x:.1f}" for x in xs)
        print(f"{name:<24}{1000 * statistics.median(xs):>18.2f}{ratio:>8.3f}   {runs}")
    print(f"\nratio lit-unlearn / plain = {l / p:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
