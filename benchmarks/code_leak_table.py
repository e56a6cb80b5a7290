"""Code leakage (LLMs4Code): each config of ``configs/code/`` on the code domain, scored by CodeLeakSuite.

For every config, one ``lit-unlearn fit`` (in this process, through the CLI parser) from
``builtin:code-<preset>/subject``, with CodeLeakSuite before (once: the start model is the same
for every config) and after (``SuiteEvaluation``). The Markdown table shows, start -> end, the
direct leak rate of the forget secrets (exact secret from its own file's context), the direct
variant rate (a variant instead of the exact secret), the indirect leak rate (secret or variant
under another file type, a README sentence, or the secret's line with its first characters),
per prompt kind, the retain secrets' direct leak rate (must stay), code utility (next-line exact
match on held-out clean code), and the wall time. The gold model (``builtin:code-<preset>/retain``,
never trained on the forget files) is scored once, as the row to reach. Full results go to ``--out``.

    python benchmarks/code_leak_table.py [--configs ga npo] [--preset tiny --steps 5]
"""

from __future__ import annotations

from suite_table import run_configs, table, table_args  # the script's folder is on sys.path

DEFAULT = ["ga", "graddiff_nll", "graddiff_kl", "npo", "rmu"]
F, R, U = "forget_secrets", "retain_secrets", "holdout_code"
COLUMNS = [("direct", f"{F}/direct_leak"), ("variant", f"{F}/direct_variant"), ("indirect", f"{F}/indirect_leak"),
           ("ind. file", f"{F}/indirect_leak_file"), ("ind. NL", f"{F}/indirect_leak_nl"),
           ("ind. prefix", f"{F}/indirect_leak_prefix"), ("retain direct", f"{R}/direct_leak"),
           ("retain indirect", f"{R}/indirect_leak"), ("code utility", f"{U}/line_em")]


def main() -> None:
    args, configs, data = table_args(__doc__, "code", DEFAULT, "code_leak")
    rows, gold = run_configs(configs, lambda c: data, args.steps, args.out, COLUMNS)
    print(f"\nCode leakage (LLMs4Code), builtin:code-{args.preset or 'small'}/subject, CodeLeakSuite start -> end. "
          "direct: exact forget secret from its own file's context (lower is better); variant: an obvious variant "
          "instead; indirect: secret or variant under another file type / README sentence / the secret's line "
          "and first characters; retain: the retain developers' secrets (higher is better); code utility: "
          "next-line exact match on held-out clean code.\n")
    print(table(rows, gold, COLUMNS))


if __name__ == "__main__":
    main()
