"""Peak memory of a GradDiff run: fp32 full fine-tuning vs LoRA on fp32, nf4 and int8 bases.

One model (a randomly initialised Llama, ~150M parameters by default, with the embedded
benchmark's small vocabulary so that the linear layers, the part bitsandbytes quantizes,
hold nearly all the weights) is saved once; each configuration then runs in its own
process: a few GradDiff steps through ``Trainer.fit`` with AdamW. Memory is the peak of the
process's private resident memory (``RssAnon``, sampled every 2 ms) minus its value before
the model loads (CPU), or the CUDA peak allocated (``--device cuda``). Ratios are to fp32 full
fine-tuning, measured in the same run.

    python benchmarks/memory.py [--hidden 1024] [--layers 12] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

CONFIGS = {
    "fp32 full": {},
    "fp32 + LoRA": {"lora": {"r": 16}},
    "nf4 + LoRA": {"quantization": "nf4", "lora": {"r": 16}},
    "int8 + LoRA": {"quantization": "int8", "lora": {"r": 16}},
}


def anon_mb() -> float:
    """Private (anonymous) resident memory of this process: weights, gradients, optimizer
    state and activations. File-backed pages (the mmapped checkpoint, shared libraries) are
    page cache the kernel can drop, so they are not counted."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class PeakSampler:
    """Samples ``anon_mb`` every ``interval`` seconds in a thread and keeps the maximum."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, anon_mb())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_mb())


def child(name: str, model_dir: str, steps: int, device: str) -> None:
    import logging
    from functools import partial

    import torch
    from lightning.pytorch import Trainer, seed_everything

    from lit_unlearn import FictitiousPeople, GradDiff

    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    data = FictitiousPeople("tiny", "forget10", batch_size=4, eval_sets=["forget"])  # the model shares its tokenizer
    data.prepare_data()
    data.setup("fit")
    baseline = anon_mb()
    seed_everything(0)
    module = GradDiff(model=model_dir, optimizer=partial(torch.optim.AdamW, lr=1e-5),
                      evaluate_at_start=False, **CONFIGS[name])
    trainer = Trainer(max_steps=steps, accelerator=device, devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0)
    with PeakSampler() as sampler:
        module.configure_model()
        # safetensors weights arrive mmapped (file pages); a GPU would hold them in its own
        # memory, so copy the plain ones into private memory to count them like the rest.
        with torch.no_grad():
            for t in list(module.model.parameters()) + list(module.model.buffers()):
                if type(t) in (torch.nn.Parameter, torch.Tensor):
                    t.data = t.data.clone()
        trainer.fit(module, datamodule=data)
    trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    result = {"name": name, "trainable": trainable}
    if device == "cuda":
        result["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_mb"] = sampler.peak - baseline
    print("RESULT " + json.dumps(result), flush=True)


def build_model(path: Path, hidden: int, layers: int, preset: str = "tiny") -> int:
    """Save a randomly initialised Llama (hidden x layers, ~2.75x MLP) with the benchmark
    preset's tokenizer to ``path``; returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lit_unlearn.datamodules.fictitious import FictitiousBenchmark, ensure_tokenizer
    from lit_unlearn.models import load_tokenizer

    tok = load_tokenizer(ensure_tokenizer(FictitiousBenchmark(preset)))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=int(hidden * 2.75) // 64 * 64,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                         max_position_embeddings=256, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model, args.steps, args.device)
        return
    with tempfile.TemporaryDirectory() as tmp:
        n_params = build_model(Path(tmp), args.hidden, args.layers)
        print(f"Llama {args.layers} layers x {args.hidden}, {n_params / 1e6:.0f}M parameters "
              f"({n_params * 4 / 2**20:.0f} MB in fp32); GradDiff, AdamW, batch 4+4, {args.steps} steps, {args.device}")
        results = []
        for name in CONFIGS:
            # Large blocks straight from mmap, so freed buffers leave the resident set at once.
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            out = subprocess.run([sys.executable, __file__, "--child", name, "--model", tmp, "--steps", str(args.steps),
                                  "--device", args.device], capture_output=True, text=True, env=env)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                print(f"{name}: failed\n{out.stderr[-2000:]}")
                continue
            results.append(json.loads(line[0][len("RESULT "):]))
    base = next((r["peak_mb"] for r in results if r["name"] == "fp32 full"), None)
    print("\n| config | trainable params | peak memory MB | vs fp32 full |")
    print("|---|---|---|---|")
    for r in results:
        ratio = f"{r['peak_mb'] / base:.3f}x" if base else "-"
        print(f"| {r['name']} | {r['trainable'] / 1e6:.2f}M | {r['peak_mb']:.0f} | {ratio} |")
    print("\nGoal: nf4 + LoRA at most 0.35x of fp32 full.")


if __name__ == "__main__":
    main()
