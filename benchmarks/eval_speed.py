"""Examples per second of the full TOFU suite: batched against one example at a time.

All runs evaluate the same model on the same sets with the same metric code (teacher-
forced passes over answers, paraphrases and perturbed answers; greedy generation for
ROUGE; MIA scores). The baseline runs one forward pass per answer and one generation per
question, as a loop over examples would; the others batch ``--batch-size`` examples, and
the suite as shipped also runs each question once and scores all of its answers as
continuations from the KV cache. The gold model's statistics are computed before timing.

    python benchmarks/eval_speed.py [--preset small] [--batch-size 64] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import torch

from lit_unlearn import FictitiousPeople, TOFUSuite
from lit_unlearn.models import load_causal_lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    data = FictitiousPeople(args.preset, "forget10")
    data.setup()
    model = load_causal_lm(f"builtin:{args.preset}/subject").eval()
    gold = f"builtin:{args.preset}/retain90"
    n = sum(len(data.eval_subset(len(r))) for r in data.eval_records.values())
    rows = []
    gold_reference = None  # one GoldReference (its memo of the gold statistics) shared by every run
    runs = [("one example at a time", 1, False), (f"batched (batch {args.batch_size})", args.batch_size, False),
            ("batched + shared prompts", args.batch_size, True)]
    for title, batch_size, share in runs:
        suite = TOFUSuite(gold_model=gold, extra_sets=["neighbor"], batch_size=batch_size, share_prompts=share,
                          max_new_tokens=args.max_new_tokens, progress=False)
        if gold_reference is None:
            suite.reference(data.tokenizer, data, "val", None, torch.device("cpu"))
            gold_reference = suite.gold
        suite.gold = gold_reference
        start = time.perf_counter()
        metrics = suite.run(model, data.tokenizer, data, "val").metrics
        rows.append((title, time.perf_counter() - start, metrics))
    base_t, base_m = rows[0][1], rows[0][2]
    print(f"\nTOFU suite on builtin:{args.preset}/subject, {n} examples over {len(data.eval_records)} sets, "
          f"max_new_tokens {args.max_new_tokens}, {torch.get_num_threads()} threads")
    print(f"{'loop':<28}{'seconds':>10}{'examples/s':>13}{'speed-up':>10}{'max |diff|':>12}")
    for title, seconds, metrics in rows:
        diff = max(abs(metrics[k] - base_m[k]) for k in base_m if "forget_quality" not in k and k != "score")
        print(f"{title:<28}{seconds:>10.1f}{n / seconds:>13.1f}{base_t / seconds:>10.2f}{diff:>12.1e}")
    print(f"\nspeed-up of the suite as shipped (batched + shared prompts): {base_t / rows[-1][1]:.1f}x (goal >= 5x); "
          f"max |diff| is the largest difference of any metric from the one-at-a-time run")


if __name__ == "__main__":
    main()
