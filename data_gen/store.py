"""Append-only JSON Lines stores keyed by stable ids: the unit of resumability.

Each append is flushed and fsync'd, so after a crash (SIGKILL included) a file holds
every record written before it, plus at most one torn last line, which is cut off
when the store is reopened. Records are looked up by key; keys already present are
skipped by the stages, so a restarted run neither duplicates nor drops records.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from emopillars_jax.errors import EmoPillarsError


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """All records of `path`; a torn (unterminated) last line is dropped (and cut if repair)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data) and repair:
        with open(path, "r+b") as fh:   # remove the partial record a kill left behind
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
    rows = []
    for n, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise EmoPillarsError(f"{path}:{n}: corrupted record (invalid JSON); delete the "
                                  "line or the file to regenerate it") from None
    return rows


class Store:
    """One stage's output file: records keyed by `key_field`."""

    def __init__(self, path: Path, key_field: str):
        self.path = Path(path)
        self.key_field = key_field
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        for row in read_jsonl(self.path, repair=True):
            self.records[row[key_field]] = row   # last write wins (never duplicated)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records.values())

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def append(self, rows: Iterable[dict]) -> None:
        rows = [r for r in rows if r[self.key_field] not in self.records]
        if not rows:
            return
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        for r in rows:
            self.records[r[self.key_field]] = r


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> int:
    """Write a whole file via a temporary name + rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return n
