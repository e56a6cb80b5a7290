"""DDP on 2 CPU processes (gloo) equals one process with the doubled batch: losses and weights.

A DivergenceGuard rides along: its per-step cross-rank decision must neither hang nor trip."""

import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]


def run(config: str, tmp_path: Path, name: str, extra: list[str]) -> tuple[dict, dict]:
    save = tmp_path / name
    args = ["lit-unlearn", "fit", "--config", str(ROOT / "configs/methods" / config), "--config",
            str(ROOT / "configs/data/fictitious_tiny.yaml"), "--trainer.max_steps=4", "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false",
            "--trainer.log_every_n_steps=1", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
            "--model.init_args.compare_with=null", "--model.init_args.evaluate_at_start=false",
            "--model.init_args.optimizer=torch.optim.SGD", "--model.init_args.optimizer.init_args.lr=0.05",
            f"--trainer.logger.init_args.save_dir={save}", "--trainer.callbacks+=lit_unlearn.DivergenceGuard", *extra]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    weights = load_file(next(save.rglob("model.safetensors")))
    events = EventAccumulator(str(next(save.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    losses = {tag: [e.value for e in events.Scalars(tag)] for tag in ("train/loss", "train/forget_loss")}
    return weights, losses


@pytest.mark.parametrize("config", ["grad_diff.yaml", "npo.yaml"])
def test_ddp_two_processes_equal_one_with_the_doubled_batch(config, tmp_path, tiny_subject):
    single_w, single_l = run(config, tmp_path, "single", ["--trainer.devices=1", "--data.init_args.batch_size=6"])
    ddp_w, ddp_l = run(config, tmp_path, "ddp", ["--trainer.strategy=ddp", "--trainer.devices=2",
                                                 "--data.init_args.batch_size=3"])
    for tag, values in single_l.items():  # logged losses are averaged over the ranks (sync_dist)
        assert len(values) == 4
        assert ddp_l[tag] == pytest.approx(values, rel=1e-4, abs=1e-5), tag
    start = load_file(Path(tiny_subject) / "model.safetensors")
    moved = 0.0
    for key, value in single_w.items():
        assert torch.allclose(ddp_w[key], value, atol=2e-6), key
        moved = max(moved, float((value - start[key]).abs().max()))
    assert moved > 1e-3  # training really changed the weights
