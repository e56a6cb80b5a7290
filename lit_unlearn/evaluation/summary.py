"""The summary table printed at the end of fit and test."""

from __future__ import annotations

_COLUMNS = (("start", "start"), ("end", "end"), ("test", "test"), ("gold", "gold retain"))


# The answer-level knowledge score the summary reports, best first: fact spans where records mark
# them, else whole answers exact under teacher forcing; token accuracy only for older columns
# (template words keep it high on facts a model never saw).
KNOWLEDGE_METRICS = ("fact_acc", "answer_em", "token_acc")


def format_summary(summary: dict[str, dict[str, float]], stage: str, seconds: float | None = None,
                   warnings: list[str] | None = None) -> str:
    """Rows ``<set>/<metric>``, columns start (step 0), end (unlearned), test, gold (reference model),
    then the targets (:func:`targets`) and the suite's ``warnings`` (``stats["warnings"]``)."""
    cols = [(key, title) for key, title in _COLUMNS if summary.get(key)]
    if stage == "test":
        cols = [(k, t) for k, t in cols if k in ("start", "test", "gold")]
    if not cols:
        return "\n".join(_warning_lines(warnings))
    rows = sorted({r for key, _ in cols for r in summary[key]})
    width = max(len(r) for r in rows) + 2
    head = f"lit-unlearn summary ({stage}" + (f", {seconds:.1f} s" if seconds is not None else "") + ")"
    lines = [head, "metric".ljust(width) + "".join(f"{t:>13}" for _, t in cols)]
    for r in rows:
        cells = "".join(f"{summary[k][r]:>13.4f}" if r in summary[k] else f"{'-':>13}" for k, _ in cols)
        lines.append(r.ljust(width) + cells)
    lines += targets(summary, "test" if stage == "test" else "end")
    lines += _warning_lines(warnings)
    return "\n".join(lines)


def _warning_lines(warnings: list[str] | None) -> list[str]:
    return [f"warning: {w}" for w in dict.fromkeys(warnings or [])]


def targets(summary: dict[str, dict[str, float]], now: str = "end") -> list[str]:
    """The two numbers that say whether unlearning worked: forget gap to the gold model, retain kept.

    Measured by the first of ``fact_acc``, ``answer_em``, ``token_acc`` that the columns have
    (see :data:`KNOWLEDGE_METRICS`)."""
    out = []
    end, start, gold = summary.get(now, {}), summary.get("start", {}), summary.get("gold", {})
    for metric in KNOWLEDGE_METRICS:
        f, r = f"forget/{metric}", f"retain/{metric}"
        if f in end and f in gold:
            out.append(f"{f}: {end[f]:.3f} vs gold retain model {gold[f]:.3f} (gap {end[f] - gold[f]:+.3f})")
        if r in end and start.get(r):
            out.append(f"{r}: {end[r]:.3f} = {100 * end[r] / start[r]:.1f}% of the start model's {start[r]:.3f}")
        if out:
            break
    return out


def markdown_table(metrics: dict[str, float], columns: dict[str, dict[str, float]] | None = None) -> str:
    """A Markdown table of ``metrics`` (one column), with extra columns where given."""
    columns = {k: v for k, v in (columns or {}).items() if v}
    head = ["metric", "value", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in sorted(metrics):
        cells = [name, _fmt(metrics[name])] + [_fmt(col.get(name)) for col in columns.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"{value:.3g}" if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4) else f"{value:.4f}"


def write_results(log_dir, metrics: dict[str, float], stats: dict, model: str | None, suite: str,
                  summary: dict[str, dict[str, float]] | None = None) -> None:
    """``results.json`` (metrics and the per-example ``stats`` a later run can use as its
    gold reference) and ``results.md`` in ``log_dir``, each written atomically. The suite's
    ``stats["warnings"]`` (metrics that degenerated, and why) stay in ``results.json`` and
    are a "Warnings" section of ``results.md``."""
    import json
    from pathlib import Path

    from lit_unlearn.utils import atomic_write_text

    log_dir = Path(log_dir)
    payload = {"model": model, "suite": suite, "metrics": metrics, "stats": stats}
    atomic_write_text(log_dir / "results.json", json.dumps(payload, indent=2))
    extra = {"start": (summary or {}).get("start", {}), "gold retain": (summary or {}).get("gold", {})}
    title = f"# lit-unlearn results: {suite}\n\nmodel: `{model}`\n\n"
    atomic_write_text(log_dir / "results.md", title + markdown_table(metrics, extra) + warnings_section(stats))


def warnings_section(stats: dict | None) -> str:
    """A Markdown "Warnings" section of ``stats["warnings"]`` (each once), or "" without warnings."""
    warnings = list(dict.fromkeys((stats or {}).get("warnings") or []))
    if not warnings:
        return ""
    return "\n## Warnings\n\n" + "".join(f"- {w}\n" for w in warnings)
