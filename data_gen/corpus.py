"""Narrative corpora: WikiPlots, JSON Lines, a folder of .txt files, or the embedded plots.

Every plot gets a stable id: WikiPlots -> its 0-based block index (as in the released
dataset), JSON Lines -> its `plot_id` field, folder -> the file name without `.txt`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from emopillars_jax.errors import EmoPillarsError, reading_text

EMBEDDED = Path(__file__).resolve().parent / "corpus" / "plots.jsonl"
WIKIPLOTS_SEP = "<EOS>"


@dataclass(frozen=True)
class Plot:
    plot_id: str
    title: str
    text: str


def _check_unique(plots: list[Plot], source: Path) -> list[Plot]:
    if not plots:
        raise EmoPillarsError(f"{source}: corpus is empty (expected at least one plot)")
    seen: set[str] = set()
    for p in plots:
        if p.plot_id in seen:
            raise EmoPillarsError(f"{source}: duplicate plot_id {p.plot_id!r}")
        seen.add(p.plot_id)
    return plots


def load_wikiplots(plots_path: Path, titles_path: Path | None = None) -> list[Plot]:
    """WikiPlots: plots separated by lines holding `<EOS>`, titles one per line."""
    titles_path = titles_path or plots_path.with_name("titles")
    if not titles_path.is_file():
        raise EmoPillarsError(f"{plots_path}: WikiPlots titles file {titles_path} not found "
                              "(set corpus.titles)")
    with reading_text(plots_path):
        blocks = plots_path.read_text(encoding="utf-8").split(WIKIPLOTS_SEP)
    if blocks and not blocks[-1].strip():
        blocks = blocks[:-1]   # the file ends with a separator
    with reading_text(titles_path):
        titles = [t.strip() for t in titles_path.read_text(encoding="utf-8").splitlines()]
    while titles and not titles[-1]:
        titles.pop()
    if len(titles) != len(blocks):
        raise EmoPillarsError(f"{plots_path}: {len(blocks)} plots but {len(titles)} titles in "
                              f"{titles_path} (expected one title per <EOS>-separated plot)")
    plots = [Plot(str(i), title, " ".join(block.split()))
             for i, (title, block) in enumerate(zip(titles, blocks))]
    for p in plots:
        if not p.text:
            raise EmoPillarsError(f"{plots_path}: plot {p.plot_id} ({p.title!r}) is empty")
    return _check_unique(plots, plots_path)


def load_jsonl(path: Path) -> list[Plot]:
    """JSON Lines with `plot_id`, `title` and `plot` per line."""
    plots = []
    with open(path, encoding="utf-8") as fh, reading_text(path):
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise EmoPillarsError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise EmoPillarsError(f"{path}:{n}: expected an object with plot_id, title, plot")
            for field in ("plot_id", "plot"):
                if field not in row or row[field] in (None, ""):
                    raise EmoPillarsError(f"{path}:{n}: missing field {field!r} "
                                          "(expected plot_id, title, plot)")
            if not isinstance(row["plot"], str):
                raise EmoPillarsError(f"{path}:{n}: field 'plot' must be a string")
            plots.append(Plot(str(row["plot_id"]), str(row.get("title") or row["plot_id"]),
                              " ".join(row["plot"].split())))
    return _check_unique(plots, path)


def load_folder(path: Path) -> list[Plot]:
    """One plot per `*.txt` file (sorted by name); the title is the file name."""
    files = sorted(path.glob("*.txt"))
    if not files:
        raise EmoPillarsError(f"{path}: corpus folder has no .txt files")
    plots = []
    for f in files:
        text = " ".join(f.read_text(encoding="utf-8", errors="replace").split())
        if not text:
            raise EmoPillarsError(f"{f}: plot file is empty")
        plots.append(Plot(f.stem, f.stem.replace("_", " "), text))
    return _check_unique(plots, path)


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "folder"
    if path.suffix in (".jsonl", ".json"):
        return "jsonl"
    return "wikiplots"


def load_corpus(spec: str = "embedded", fmt: str = "auto", titles: str | None = None,
                max_plots: int | None = None) -> list[Plot]:
    """Load a corpus by path ('embedded' = the shipped public-domain synopses)."""
    path = EMBEDDED if spec == "embedded" else Path(spec).expanduser()
    if not path.exists():
        raise EmoPillarsError(f"corpus.path: {path} not found (expected 'embedded', a WikiPlots "
                              "plots file, a .jsonl file or a folder of .txt files)")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "folder":
        if not path.is_dir():
            raise EmoPillarsError(f"{path}: corpus.format=folder needs a folder")
        plots = load_folder(path)
    elif path.is_dir():
        raise EmoPillarsError(f"{path}: is a folder; set corpus.format=folder")
    elif fmt == "jsonl":
        plots = load_jsonl(path)
    else:
        plots = load_wikiplots(path, Path(titles).expanduser() if titles else None)
    return plots[:max_plots] if max_plots else plots


def shard_plots(plots: list[Plot], shard: int, num_shards: int) -> list[Plot]:
    """Round-robin over corpus order: deterministic, balanced, and disjoint across shards."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise EmoPillarsError(f"--shard {shard} --num-shards {num_shards}: expected "
                              "0 <= shard < num_shards")
    return plots[shard::num_shards]
