"""GPU check: a short bf16-mixed run and an nf4 + LoRA run of GradDiff on one CUDA device.

Prints tokens per second (attended tokens of the forget and retain batches, after a warm-up)
and the peak CUDA memory allocated for each run. Not used by the tests; needs a CUDA GPU.

    python benchmarks/gpu_check.py [--steps 30] [--batch-size 8]

The model is a randomly initialised ~150M-parameter Llama with the embedded benchmark's
tokenizer, trained on the benchmark's small preset (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from memory import build_model  # benchmarks/ is on sys.path when a script in it runs

from lit_unlearn import FictitiousPeople, GradDiff

RUNS = {
    "bf16-mixed, full": ({"precision": "bf16-mixed"}, {}),
    "nf4 + LoRA r16, bf16 compute": ({"precision": "bf16-true"}, {"quantization": "nf4", "lora": {"r": 16}}),
}


class Throughput(Callback):
    """Attended tokens per second over the steps after ``warmup``."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup, self.tokens, self.start, self.seconds = warmup, 0, None, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.start is not None:
            self.tokens += sum(int(part["attention_mask"].sum()) for part in (batch["forget"], batch.get("retain"))
                               if part is not None)

    def on_train_end(self, trainer, module):
        torch.cuda.synchronize()
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        model = tmp
        build_model(Path(tmp), hidden=1024, layers=12, preset="small")
        print("| run | tokens/s | peak memory MiB | final loss |")
        print("|---|---|---|---|")
        for name, (trainer_kw, module_kw) in RUNS.items():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            seed_everything(0)
            meter = Throughput()
            module = GradDiff(model=model, optimizer=partial(torch.optim.AdamW, lr=1e-5),
                              evaluate_at_start=False, **module_kw)
            data = FictitiousPeople("small", "forget10", batch_size=args.batch_size, sampling="cyclic",
                                    eval_sets=["forget"])
            trainer = Trainer(accelerator="cuda", devices=1, max_steps=args.steps, logger=False,
                              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                              limit_val_batches=0, num_sanity_val_steps=0, callbacks=[meter], **trainer_kw)
            trainer.fit(module, datamodule=data)
            loss = float(module.last_loss)  # the last step's; log_every_n_steps may skip it
            rate = meter.tokens / meter.seconds if meter.seconds else float("nan")
            print(f"| {name} | {rate:,.0f} | {torch.cuda.max_memory_allocated() / 2**20:,.0f} | {loss:.4f} |")


if __name__ == "__main__":
    main()
