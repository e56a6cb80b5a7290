"""DDP on 2 CPU processes (gloo) equals one process with the doubled batch: losses and weights.

A DivergenceGuard rides along: its per-step cross-rank decision must neither hang nor trip."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import lit_unlearn, requires_ddp, tiny_cli_args


def run(config: str, tmp_path: Path, name: str, extra: list[str]) -> tuple[dict, dict]:
    """Fit ``config`` on the tiny preset for 4 SGD steps; the saved weights and the logged losses."""
    save = tmp_path / name
    lit_unlearn(tiny_cli_args(
        config, "--trainer.enable_checkpointing=false", "--trainer.log_every_n_steps=1",
        "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--model.init_args.compare_with=null",
        "--model.init_args.evaluate_at_start=false", "--model.init_args.optimizer=torch.optim.SGD",
        "--model.init_args.optimizer.init_args.lr=0.05", f"--trainer.logger.init_args.save_dir={save}",
        "--trainer.callbacks+=lit_unlearn.DivergenceGuard", *extra, steps=4), cwd=tmp_path)
    weights = load_file(next(save.rglob("model.safetensors")))  # SavePretrained: <log_dir>/model
    events = EventAccumulator(str(next(save.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    losses = {tag: [e.value for e in events.Scalars(tag)] for tag in ("train/loss", "train/forget_loss")}
    return weights, losses


@requires_ddp
@pytest.mark.parametrize("config", ["grad_diff", "npo"])
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
