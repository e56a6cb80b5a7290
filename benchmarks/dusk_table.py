"""DUSK-style documents: each config of ``configs/dusk/`` scored by DUSKSuite's seven measures.

For every config, one ``lit-unlearn fit`` (in this process) from
``builtin:dusk-<preset>/subject-<style>``, with DUSKSuite before (once: the start model is the
same for every config) and after. The table shows, start -> end: verbatim memorisation of the
forget documents (ROUGE-L F1 of continuations), fact accuracy on the facts only the forget
documents state (unique forget), on the facts every document states (shared: keep them), on the
facts only a retain document states (unique retain) and on unrelated people (downstream), the
MIA AUC (Min-K%) and privacy leak of forget documents against never-trained documents of the
same style, the retain deviation from the gold model, and the wall time. The gold model
(``builtin:dusk-<preset>/retain-<style>``, never trained on the forget documents) is the row to
reach. Full results go to ``--out``.

    python benchmarks/dusk_table.py [--configs grad_ascent npo] [--preset tiny --steps 5]
"""

from __future__ import annotations

from suite_table import run_configs, table, table_args  # the script's folder is on sys.path

DEFAULT = ["grad_ascent", "grad_diff", "npo", "simnpo", "rmu", "grad_diff_melu", "simnpo_melu"]
COLUMNS = [("verbatim", "verbmem/rougeL_f1"), ("unique forget", "unique_forget/fact_acc"),
           ("shared", "shared/fact_acc"), ("unique retain", "unique_retain/fact_acc"),
           ("downstream", "downstream/fact_acc"), ("MIA", "mia/min_k"), ("privleak", "privleak"),
           ("retain dev.", "retain_deviation")]


def main() -> None:
    args, configs, data = table_args(__doc__, "dusk", DEFAULT, "dusk")
    tiny_rmu = ["--model.init_args.layer=1"]  # the tiny model has 2 layers
    rows, gold = run_configs(configs, lambda c: data + (tiny_rmu if args.preset == "tiny" and c.stem == "rmu" else []),
                             args.steps, args.out, COLUMNS)
    print(f"\nDUSK-style documents, builtin:dusk-{args.preset or 'small'}/subject-interview, DUSKSuite start -> end. "
          "verbatim: ROUGE-L F1 of forget-document continuations; unique forget / shared / unique retain / "
          "downstream: cloze fact accuracy (only the forget documents state / every document states / only a "
          "retain document states / unrelated people); MIA: Min-K% AUC forget documents vs the holdout people's "
          "documents in the same style; "
          "privleak: relative to the gold model's AUC (0 is the gold model); retain dev.: mean |model - gold| over "
          "shared, unique retain and downstream.\n")
    print(table(rows, gold, COLUMNS))


if __name__ == "__main__":
    main()
