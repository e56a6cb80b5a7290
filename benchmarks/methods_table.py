"""Every method at its shipped config on the embedded benchmark, scored by the TOFU suite.

Runs ``configs/methods/<name>.yaml`` (small preset, forget10) and evaluates the unlearned
model with ``TOFUSuite`` against the gold retain model: forget and retain fact accuracy,
forget quality, model utility, MIA (Min-K%++) AUC, and training time per step.

    python benchmarks/methods_table.py [--configs grad_ascent npo rmu ...]

A config may carry command-line overrides after commas, e.g. the GeRe replay losses:
``--configs npo npo_gere npo_gere,--model.init_args.replay.init_args.loss=kl``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

from lit_unlearn.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["grad_ascent", "grad_diff", "npo", "simnpo", "idk_nll", "idk_dpo", "rmu", "srmu", "undial",
           "selective_amnesia", "melu_graddiff", "gu_graddiff", "gu_npo", "constrained_entropic", "kfade", "reglu",
           "guard_graddiff", "guard_npo", "wga", "satimp", "ceu", "altpo", "modhifi", "rule", "npo_gere"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.configs:
            name, *overrides = spec.split(",")
            cfg = ROOT / "configs" / "methods" / f"{name}.yaml"
            if overrides:
                name = name + "," + ",".join(o.partition("=")[0].rsplit(".", 1)[-1].lstrip("-") + "="
                                             + o.partition("=")[2] for o in overrides)
            start = time.perf_counter()
            cli = cli_main(["fit", "--config", str(cfg), "--config", str(ROOT / "configs/eval/tofu_suite.yaml"),
                            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                            f"--trainer.logger.init_args.save_dir={tmp}", "--save_pretrained.enabled=false",
                            "--trainer.check_val_every_n_epoch=1000", *overrides])
            seconds = time.perf_counter() - start
            cli.model.suite.progress = False
            suite = cli.model.run_suite("val").metrics
            steps = max(cli.trainer.global_step, 1)
            rows.append((name, type(cli.model).__name__, suite["forget/fact_acc"], suite["retain/fact_acc"],
                         suite.get("forget_quality", float("nan")), suite["model_utility"], suite["mia/min_k_pp"],
                         1000 * seconds / steps, steps, getattr(cli.model, "factor_seconds", None)))
            if spec == args.configs[0]:
                gold = cli.model.summary.get("gold", {})
    print("\nTOFU suite on small forget10 after each shipped config (gold retain model: forget fact acc "
          f"{gold.get('forget/fact_acc', float('nan')):.3f}, retain {gold.get('retain/fact_acc', float('nan')):.3f})")
    print(f"{'config':<22}{'method':<20}{'forget':>8}{'retain':>8}{'FQ':>10}{'MU':>7}{'MIA++':>7}{'ms/step':>9}{'steps':>7}"
          f"{'setup s':>9}")
    for name, method, f, r, fq, mu, mia, ms, steps, setup in rows:
        extra = f"{setup:>9.2f}" if setup is not None else f"{'':>9}"
        print(f"{name:<22}{method:<20}{f:>8.3f}{r:>8.3f}{fq:>10.2e}{mu:>7.3f}{mia:>7.3f}{ms:>9.0f}{steps:>7}{extra}")
    print("ms/step: wall time of the whole fit (evaluations, reference caching, tracing) per optimizer step; "
          "setup s: K-FADE's K-FAC factor collection, reported separately (also inside ms/step)")


if __name__ == "__main__":
    main()
