"""Reading records from local files, in-memory lists or the Hugging Face hub.

A *source* is one of

- a path to a ``.json`` (array or JSON lines, as in the published TOFU files), ``.jsonl``,
  ``.parquet`` or ``.csv`` file;
- a list of dicts;
- a dict ``{"path": ...}``, ``{"records": [...]}`` or ``{"hub": "org/name", "subset": ..., "split": "train"}``,
  optionally with ``"fields"`` overriding field names for this set only (e.g. score the
  ``paraphrased_answer``: ``{"path": "forget.json", "fields": {"answer": "paraphrased_answer"}}``)
  and ``"prompt_template"`` (e.g. ``"{question}"`` for text continuations);
- a string that is not path-shaped: a hub dataset name (needs the ``hub`` extra and a network).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

SUPPORTED_EXTENSIONS = (".json", ".jsonl", ".parquet", ".csv")
Source = Union[str, list[dict[str, Any]], dict[str, Any]]


@dataclass
class Records:
    """Rows of one source plus a description of where they came from (for error messages)."""

    rows: list[dict[str, Any]]
    origin: str
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def where(self, row: int) -> str:
        return f"row {row} of {self.origin}"

    def __len__(self) -> int:
        return len(self.rows)


def load_records(source: Source, role: str) -> Records:
    """Load the rows of ``source``; ``role`` (e.g. ``"forget"``) names it in errors."""
    if isinstance(source, Records):
        return source
    if isinstance(source, (list, tuple)):
        for i, row in enumerate(source):
            if not isinstance(row, dict):
                raise TypeError(f"{role}: row {i} of the in-memory list is a {type(row).__name__}, expected a dict")
        return Records([dict(r) for r in source], f"the in-memory {role} list")
    if isinstance(source, dict):
        keys = set(source)
        unknown = keys - {"records", "path", "hub", "subset", "split", "fields", "prompt_template"}
        if unknown:
            raise ValueError(f"{role}: unknown key(s) {sorted(unknown)} in a source dict; expected 'path', "
                             "'records' or 'hub' (with 'subset', 'split'), and optionally 'fields' and "
                             "'prompt_template'")
        if "records" in keys:
            out = load_records(source["records"], role)
        elif "path" in keys:
            out = _load_file(Path(source["path"]).expanduser(), role)
        elif "hub" in keys:
            out = _load_hub(source["hub"], source.get("subset"), source.get("split", "train"), role)
        else:
            raise ValueError(f"{role}: a source dict needs one of the keys 'path', 'records' or 'hub', "
                             f"got {sorted(keys)}")
        meta = {k: source[k] for k in ("fields", "prompt_template") if source.get(k) is not None}
        if meta:
            out = Records(out.rows, out.origin, out.path, {**out.meta, **meta})
        return out
    if isinstance(source, (str, Path)):
        text = str(source)
        path = Path(text).expanduser()
        if path.suffix or path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
            return _load_file(path, role)
        return _load_hub(text, None, "train", role)
    raise TypeError(f"{role}: unsupported source type {type(source).__name__}; expected a path, a list of dicts "
                    "or a dict")


def _load_file(path: Path, role: str) -> Records:
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise ValueError(f"{role}: unsupported file extension '{path.suffix}' of '{path}'; "
                         f"expected one of {', '.join(SUPPORTED_EXTENSIONS)}")
    if not path.is_file():
        raise FileNotFoundError(f"{role}: data file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        rows = read_json(path, role)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = _read_csv(path)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{role}: row {i} of '{path}' is a {type(row).__name__}, expected an object with fields")
    return Records(rows, f"'{path}'", path)


def read_json(path: Path, role: str) -> list[Any]:
    """Rows of a JSON array or JSON-lines file; errors name ``role``, the file and the line."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{role}: '{path}' is not valid JSON: {err}") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{role}: line {lineno} of '{path}' is not valid JSON ({err.msg}); "
                                 "expected a JSON array or one JSON object per line") from None
    return rows


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key, value in row.items():
            # list-valued fields (perturbed answers, spans) are stored as JSON in a cell
            if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
                try:
                    row[key] = json.loads(value)
                except json.JSONDecodeError:
                    pass
    return rows


def _load_hub(name: str, subset: str | None, split: str, role: str) -> Records:
    try:
        import datasets
    except ImportError:
        raise ImportError(f"{role}: '{name}' is not a local file, and loading hub datasets needs the 'datasets' "
                          "package: pip install 'lit-unlearn[hub]'") from None
    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as err:  # the hub raises many types; all mean the same to the user
        raise OSError(f"{role}: could not load the hub dataset '{name}' (subset={subset!r}, split={split!r}): "
                      f"{type(err).__name__}: {err}. Offline? Save it as JSON/Parquet elsewhere and pass the "
                      "file path instead.") from err
    return Records([dict(r) for r in ds], f"hub dataset '{name}' ({subset or 'default'}/{split})")
