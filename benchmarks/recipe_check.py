"""Run a recipe on several seeds and read its goal's criteria (issue: the forget10 recipe).

    python benchmarks/recipe_check.py [--config configs/recipes/forget10.yaml] [--seeds 0 1 2]

Each seed is one ``lit-unlearn fit`` of the recipe (its callbacks measure everything): forget quality
(``suite/forget_quality``), retain fact accuracy against the subject's, forget fact accuracy against
the gold retain model's, relearning recovery (``RelearningProbe``) and the stability gap
(``StabilityGap``). Prints one row per seed with each criterion marked met or not, and the
forget truth ratios' quartiles beside the gold retain model's (what forget quality compares).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import torch

from lit_unlearn.callbacks import SuiteEvaluation
from lit_unlearn.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
# (label, metric, test(value, start, gold)) -- the recipe's goal
CRITERIA = (
    ("FQ >= 0.05", "suite/forget_quality", lambda v, s, g: v >= 0.05),
    ("retain >= 0.95 x subject", "retain/fact_acc", lambda v, s, g: v >= 0.95 * s),
    ("|forget - gold| <= 0.05", "forget/fact_acc", lambda v, s, g: abs(v - g) <= 0.05),
    ("recovery <= 0.3", "relearn/recovery", lambda v, s, g: v <= 0.3),
    ("stability gap <= 0.05", "stability/gap", lambda v, s, g: v <= 0.05),
)


def quartiles(values) -> str:
    t = torch.as_tensor(values, dtype=torch.float64)
    return " / ".join(f"{x:.2f}" for x in torch.quantile(t, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)))


def run(config: str, seed: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cli = cli_main(["fit", "--config", config, f"--seed_everything={seed}", "--trainer.enable_progress_bar=false",
                        "--trainer.enable_model_summary=false", f"--trainer.logger.init_args.save_dir={tmp}",
                        "--save_pretrained.enabled=false", "--summary.verbose=false", *overrides])
        seconds = time.perf_counter() - start
    end = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}
    end.update(cli.model.summary.get("end", {}))
    suite = next(c for c in cli.trainer.callbacks if isinstance(c, SuiteEvaluation)).last_result
    memo = getattr(getattr(cli.model.suite, "gold", None), "_memo", {})  # the gold stats the suite compared with
    gold_tr = next((stats.get("forget_truth_ratios") for stats in memo.values()), None)
    return {"seed": seed, "end": end, "start": cli.model.summary.get("start", {}),
            "gold": cli.model.summary.get("gold", {}), "seconds": seconds,
            "tr": quartiles(suite.stats["forget_truth_ratios"]) if suite is not None else "",
            "gold_tr": quartiles(gold_tr) if gold_tr else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs/recipes/forget10.yaml"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("overrides", nargs="*", help="extra fit arguments, e.g. --trainer.max_epochs=10")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = [run(args.config, seed, args.overrides) for seed in args.seeds]
    print(f"\n{args.config}: " + ", ".join(f"{label}" for label, _, _ in CRITERIA))
    print("| seed | " + " | ".join(label for label, _, _ in CRITERIA) + " | forget truth ratio Q1/Q2/Q3 | s |")
    print("|---" * (len(CRITERIA) + 3) + "|")
    for r in rows:
        cells = []
        for _, metric, test in CRITERIA:
            v = r["end"].get(metric, float("nan"))
            ok = test(v, r["start"].get(metric, float("nan")), r["gold"].get(metric, float("nan")))
            cells.append(f"{v:.3g} {'ok' if ok else 'FAIL'}")
        print(f"| {r['seed']} | " + " | ".join(cells) + f" | {r['tr']} | {r['seconds']:.0f} |")
    g, s = rows[0]["gold"], rows[0]["start"]
    nan = float("nan")
    print(f"subject: retain {s.get('retain/fact_acc', nan):.3f}, forget {s.get('forget/fact_acc', nan):.3f}; "
          f"gold retain model: forget {g.get('forget/fact_acc', nan):.3f}"
          + (f", forget truth ratio Q1/Q2/Q3 {rows[0]['gold_tr']}" if rows[0]["gold_tr"] else ""))


if __name__ == "__main__":
    main()
