"""BLUR-style evaluation of the shipped method configs: combined queries and graded relearning.

Runs ``configs/methods/<name>.yaml`` on the embedded benchmark's ``blur-small`` or ``blur-tiny``
preset, whose built-in models are also trained on combined queries of retain people (so the
start model answers both parts of a combined forget/retain query), with BLUR's sets
(``configs/data/blur_small.yaml`` / ``blur_tiny.yaml``: combined queries and the graded relearn sets, with a
``RelearningProbe`` at the end of fit) and ``configs/eval/blur_suite.yaml`` (``BLURSuite`` at
the start and end of fit), and prints a Markdown table: single-query forget and retain fact
accuracy, the forget and retain parts of the combined queries, the share of combined queries
answered selectively (retain part right, forget part wrong), the recovery after relearning on
each graded set (forget half, its paraphrase, the planted neighbors, unrelated people), and
the wall time of the fit (probe and evaluations included). The first rows are the start
model and, where the data config names one, the gold retain model (teacher-forced metrics of
the run summary; no probe).

    python benchmarks/blur_table.py [--preset blur-small] [--configs grad_ascent grad_diff npo rmu simnpo]
    python benchmarks/blur_table.py --preset blur-tiny --steps 3      # a quick check of the script
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

from lit_unlearn.callbacks import RelearningProbe, SuiteEvaluation
from lit_unlearn.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["grad_ascent", "grad_diff", "npo", "rmu", "simnpo"]
# The tiny built-in model has 2 layers; configs that name a layer of the 4-layer small model need these.
TINY_OVERRIDES = {"rmu": ["--model.init_args.layer=1"], "srmu": ["--model.init_args.layer=1"]}
COLUMNS = [("forget", "forget/fact_acc"), ("retain", "retain/fact_acc"),
           ("comb. forget", "combined_forget/fact_acc"), ("comb. retain", "combined_retain/fact_acc"),
           ("selective", "combined/selective_acc")]


def run(name: str, preset: str, save_dir: str, steps: int | None, relearn_steps: int | None,
        relearn_lr: float | None) -> dict:
    """One fit of a shipped method config with BLUR's data and suite; the suite at start and end, the probe."""
    args = ["--config", str(ROOT / "configs" / "methods" / f"{name}.yaml"),
            "--config", str(ROOT / "configs" / "data" / f"blur_{preset.removeprefix('blur-')}.yaml"),
            "--config", str(ROOT / "configs" / "eval" / "blur_suite.yaml"),
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={save_dir}", "--save_pretrained.enabled=false",
            "--summary.verbose=false", "--trainer.check_val_every_n_epoch=1000"]
    args += TINY_OVERRIDES.get(name, []) if preset.endswith("tiny") else []
    args += [f"--trainer.max_steps={steps}"] if steps is not None else []
    cli = cli_main(args, run=False)
    cli.model.suite.progress = False
    probe = next(c for c in cli.trainer.callbacks if isinstance(c, RelearningProbe))
    probe.steps = relearn_steps or probe.steps
    probe.lr = relearn_lr or probe.lr
    started = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - started
    suite = next(c for c in cli.trainer.callbacks if isinstance(c, SuiteEvaluation))
    return {"config": name, "method": type(cli.model).__name__, "start": suite.history[0],
            "end": suite.history[-1], "probe": probe.history[-1], "sets": probe.relearn_sets,
            "probe_steps": probe.steps, "probe_lr": probe.lr, "gold": cli.model.summary.get("gold", {}),
            "steps": cli.trainer.global_step, "seconds": seconds}


def cell(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def table(rows: list[dict]) -> str:
    sets = rows[0]["sets"]
    head = ["config", "method", *[c for c, _ in COLUMNS], *[f"recovery {s}" for s in sets], "steps", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first, gold = rows[0]["start"], rows[0]["gold"]
    lines.append("| start model | | " + " | ".join(cell(first.get(k)) for _, k in COLUMNS)
                 + " |" * (len(sets) + 2) + " |")
    if gold:
        lines.append("| gold retain | | " + " | ".join(cell(gold.get(k)) for _, k in COLUMNS[:4])
                     + " |" * (len(sets) + 3) + " |")
    for r in rows:
        lines.append(f"| {r['config']} | {r['method']} | " + " | ".join(cell(r["end"].get(k)) for _, k in COLUMNS)
                     + " | " + " | ".join(cell(r["probe"].get(f"{s}/recovery")) for s in sets)
                     + f" | {r['steps']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT, help="names in configs/methods/")
    parser.add_argument("--preset", choices=["blur-small", "blur-tiny"], default="blur-small",
                        help="configs/data/blur_small.yaml or blur_tiny.yaml (blur-tiny: a quick check of the script)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of every config (default: its own)")
    parser.add_argument("--relearn-steps", type=int, default=None, help="probe steps per set (default: the config's)")
    parser.add_argument("--relearn-lr", type=float, default=None, help="probe learning rate (default: the config's)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(name, args.preset, tmp, args.steps, args.relearn_steps, args.relearn_lr) for name in args.configs]
    r = rows[0]
    unlearned = "; ".join(f"{x['config']} {cell(x['probe']['unlearned'])}" for x in rows)
    print(f"\nBLUR-style evaluation on the {args.preset} preset (forget10). Fact accuracy after unlearning "
          f"(BLURSuite, teacher-forced); recovery = (relearned - unlearned) / (start - unlearned) of the forget fact "
          f"accuracy on the held-out half of the forget set after {r['probe_steps']} AdamW steps at lr "
          f"{r['probe_lr']:g} on each set, from the same unlearned weights (unlearned: {unlearned}).\n")
    print(table(rows))


if __name__ == "__main__":
    main()
