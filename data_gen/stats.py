"""`emopillars stats RUN_DIR`: what a generation run produced, as report.md, report.json
and PNG plots (counts per stage, label distribution, labels per example, neutral share,
rejects by reason, label names the teacher answered outside the taxonomy, distinct-n, and
MiniLM embedding cosine within vs across characters)."""
from __future__ import annotations

import json
import logging
import re
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

from emopillars_jax.errors import EmoPillarsError
from emopillars_jax.taxonomy import LABELS, NEUTRAL_ID

from .labels import process_labels
from .stages import STAGES, stable_hash
from .store import read_jsonl

log = logging.getLogger(__name__)
MAX_PAIRS = 20000   # pairs sampled per cosine statistic


def stage_dirs(run: Path) -> list[Path]:
    dirs = [run / "stages"] if (run / "stages").is_dir() else []
    dirs += sorted(p for p in (run / "shards").glob("*-of-*") if p.is_dir())
    return dirs


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the lower-cased, whitespace-tokenised texts."""
    grams = [tuple(t[i:i + n]) for t in (x.lower().split() for x in texts)
             for i in range(len(t) - n + 1)]
    return round(len(set(grams)) / len(grams), 4) if grams else 0.0


def reason_kind(reason: str) -> str:
    """A reject reason without its details (parenthesised part, numbers), for counting."""
    return re.sub(r"\s*\(.*$|\d+", "#", reason)[:80].rstrip("#").strip()


def unmapped_summary(answers: list[list], top: int = 10) -> dict:
    """What label processing dropped from stored label answers ([[name, level], ...] each):
    the share of answers with a name outside the taxonomy (and its synonyms), and the most
    frequent such names, counted once per answer."""
    names = Counter()
    with_unmapped = 0
    for pairs in answers:
        dropped = set(process_labels([tuple(p) for p in pairs]).unmapped)
        with_unmapped += bool(dropped)
        names.update(dropped)
    return {"answers": len(answers), "with_unmapped": with_unmapped,
            "share": round(with_unmapped / len(answers), 4) if answers else 0.0,
            "top_unmapped": [[n, c] for n, c in sorted(names.items(),
                                                        key=lambda kv: (-kv[1], kv[0]))[:top]]}


def unmapped_lines(summary: dict) -> list[str]:
    """Markdown lines of an unmapped_summary (shared by `stats` and `teacher-eval`)."""
    top = ", ".join(f"{n} {c}" for n, c in summary["top_unmapped"]) or "none"
    return [f"- label answers with a name outside the taxonomy: {summary['with_unmapped']} of "
            f"{summary['answers']} (share {summary['share']}); those names are dropped",
            f"- most frequent unmapped names (answers naming them): {top}"]


def cosine_within_across(embs, owners: list[str], seed: int = 0) -> dict:
    """Mean pairwise cosine of (normalised) embeddings, same owner vs different owners."""
    import numpy as np
    by_owner: dict[str, list[int]] = defaultdict(list)
    for i, o in enumerate(owners):
        by_owner[o].append(i)
    within = [(a, b) for idx in by_owner.values() for a, b in combinations(idx, 2)]
    across = [(a, b) for a, b in combinations(range(len(owners)), 2) if owners[a] != owners[b]]
    out = {}
    for name, pairs in (("within", within), ("across", across)):
        if len(pairs) > MAX_PAIRS:   # deterministic sample
            pairs = sorted(pairs, key=lambda p: stable_hash(seed, *p))[:MAX_PAIRS]
        if pairs:
            a, b = np.array(pairs).T
            out[name] = round(float(np.mean(np.sum(embs[a] * embs[b], axis=1))), 4)
            out[f"{name}_pairs"] = len(pairs)
    return out


def embed_texts(texts: list[str], encoder: str = "minilm-l6", batch: int = 64):
    """Normalised mean-pooled embeddings from the project's Flax MiniLM encoder."""
    import numpy as np
    from flax import nnx

    from emopillars_jax.assets import resolve
    from emopillars_jax.models import load_encoder
    from emopillars_jax.tokenization import Tokenizer
    model, _ = load_encoder(encoder)
    tok = Tokenizer.from_folder(resolve(encoder, kind="encoder"))
    fn = nnx.jit(lambda m, i, a, t: m.embed(i, a, t, normalize=True))
    out = []
    for lo in range(0, len(texts), batch):
        chunk = texts[lo:lo + batch]
        enc = tok(chunk + [""] * (batch - len(chunk)), max_length=64, length=64)
        out.append(np.asarray(fn(model, enc["input_ids"], enc["attention_mask"],
                                 enc["token_type_ids"]))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


# the dataset fields the report reads (see pipeline.build_records)
EXAMPLE_FIELDS = ("plot_id", "character_id", "utterance", "utterance_kind")


def check_example(path: Path, n: int, rec) -> None:
    """A dataset record the report can read, else an error naming the file and field."""
    where = f"{path}: record {n}"
    if not isinstance(rec, dict):
        raise EmoPillarsError(f"{where}: expected a JSON object")
    for key in ("labels",) + EXAMPLE_FIELDS:
        if key not in rec:
            raise EmoPillarsError(f"{where}: no '{key}' field")
    if not isinstance(rec["utterance"], str):
        raise EmoPillarsError(f"{where}: 'utterance' must be a string")
    labels = rec["labels"]
    bad = ([i for i in labels if type(i) is not int or not 0 <= i < len(LABELS)]
           if isinstance(labels, list) else [labels])
    if bad:
        raise EmoPillarsError(f"{where}: 'labels' must be a list of label ids "
                              f"0-{len(LABELS) - 1}, got {str(bad[0])[:40]}")


def collect(run: Path, embeddings: bool = True) -> dict:
    dirs = stage_dirs(run)
    if not dirs and not (run / "dataset").is_dir():
        raise EmoPillarsError(f"{run}: not a generation run (no stages/, shards/ or dataset/)")
    report: dict = {"run_dir": str(run), "stages": {}, "rejects": {}}
    for name, st in STAGES.items():
        rows = [r for d in dirs for r in read_jsonl(d / f"{name}.jsonl")]
        report["stages"][name] = {"records": len(rows)}
    rejects = [r for d in dirs for r in read_jsonl(d / "rejects.jsonl")]
    by_reason = Counter((r["stage"], reason_kind(r["reason"])) for r in rejects)
    for (stage, reason), n in sorted(by_reason.items()):
        report["rejects"].setdefault(stage, {})[reason] = n
        report["stages"][stage]["rejected"] = report["stages"][stage].get("rejected", 0) + n
    report["label_answers"] = unmapped_summary(
        [r["emotions"] for d in dirs for r in read_jsonl(d / "labels.jsonl")])
    utts = [u for d in dirs for r in read_jsonl(d / "utterances.jsonl") for u in r["utterances"]]
    report["utterances_generated"] = {"total": len(utts),
                                      "neutral": sum(u["kind"] == "neutral" for u in utts)}
    data: dict[str, list[dict]] = {}
    for kind in ("contextless", "contextual"):
        rows = []
        for f in sorted((run / "dataset" / kind).glob("*.jsonl")):
            for n, rec in enumerate(read_jsonl(f), 1):
                check_example(f, n, rec)
                rows.append(rec)
        data[kind] = rows
        if not rows:
            report[kind] = {"examples": 0}
            continue
        counts = Counter(LABELS[i] for r in rows for i in r["labels"])
        per_ex = Counter(len(r["labels"]) for r in rows)
        report[kind] = {
            "examples": len(rows), "plots": len({r["plot_id"] for r in rows}),
            "characters": len({r["character_id"] for r in rows}),
            "label_counts": {n: counts.get(n, 0) for n in LABELS},
            "labels_per_example": {str(k): per_ex[k] for k in sorted(per_ex)},
            "mean_labels_per_example": round(sum(len(r["labels"]) for r in rows) / len(rows), 3),
            "neutral_share": round(sum(NEUTRAL_ID in r["labels"] for r in rows) / len(rows), 4),
            "distinct_1": distinct_n([r["utterance"] for r in rows], 1),
            "distinct_2": distinct_n([r["utterance"] for r in rows], 2),
        }
    report["embedding_cosine"] = {}
    rows = data["contextless"]
    if embeddings and len(rows) >= 2:
        try:
            embs = embed_texts([r["utterance"] for r in rows])
        except Exception as exc:  # noqa: BLE001 - the report is still useful without it
            report["embedding_cosine"]["skipped"] = f"{type(exc).__name__}: {exc}"[:300]
        else:
            for group, keep in (("all", lambda r: True),
                                ("neutral", lambda r: r["utterance_kind"] == "neutral"),
                                ("emotional", lambda r: r["utterance_kind"] != "neutral")):
                idx = [i for i, r in enumerate(rows) if keep(r)]
                if len(idx) >= 2:
                    report["embedding_cosine"][group] = cosine_within_across(
                        embs[idx], [rows[i]["character_id"] for i in idx])
    elif not embeddings:
        report["embedding_cosine"]["skipped"] = "disabled"
    return report


def plot_report(report: dict, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    cl = report.get("contextless", {})
    if cl.get("examples"):
        fig, ax = plt.subplots(figsize=(10, 4))
        ax.bar(list(cl["label_counts"]), list(cl["label_counts"].values()), color="#4c72b0")
        ax.set_title(f"Label distribution ({cl['examples']} context-less examples)")
        ax.tick_params(axis="x", rotation=75)
        fig.tight_layout()
        paths.append(out / "label_distribution.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        per = cl["labels_per_example"]
        ax.bar([int(k) for k in per], list(per.values()), color="#55a868")
        ax.set_xlabel("labels per example")
        ax.set_ylabel("examples")
        ax.set_title(f"mean {cl['mean_labels_per_example']}, neutral share {cl['neutral_share']}")
        fig.tight_layout()
        paths.append(out / "labels_per_example.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(report["stages"])
    axes[0].bar(names, [report["stages"][n]["records"] for n in names], label="records")
    axes[0].bar(names, [report["stages"][n].get("rejected", 0) for n in names],
                bottom=[report["stages"][n]["records"] for n in names], label="rejected",
                color="#c44e52")
    axes[0].set_title("Stage outputs")
    axes[0].legend()
    axes[0].tick_params(axis="x", rotation=30)
    cos = {g: v for g, v in report["embedding_cosine"].items() if isinstance(v, dict)}
    if cos:
        groups = list(cos)
        x = range(len(groups))
        axes[1].bar([i - 0.2 for i in x], [cos[g].get("within", 0) for g in groups], 0.4,
                    label="within character")
        axes[1].bar([i + 0.2 for i in x], [cos[g].get("across", 0) for g in groups], 0.4,
                    label="across characters")
        axes[1].set_xticks(list(x), groups)
        axes[1].set_title("MiniLM mean pairwise cosine")
        axes[1].legend()
    else:
        axes[1].axis("off")
        axes[1].text(0.5, 0.5, "embedding cosine not computed", ha="center")
    fig.tight_layout()
    paths.append(out / "stages_and_diversity.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def markdown(report: dict, images: list[Path]) -> str:
    lines = [f"# Generation report: {report['run_dir']}", "", "## Stages", "",
             "| stage | records | rejected |", "|---|---|---|"]
    for n, s in report["stages"].items():
        lines.append(f"| {n} | {s['records']} | {s.get('rejected', 0)} |")
    if report["rejects"]:
        lines += ["", "## Rejects by reason", "", "| stage | reason | count |", "|---|---|---|"]
        for stage, reasons in report["rejects"].items():
            lines += [f"| {stage} | {r} | {n} |" for r, n in reasons.items()]
    lines += ["", "## Label answers: names outside the taxonomy", ""] + \
        unmapped_lines(report["label_answers"])
    for kind in ("contextless", "contextual"):
        d = report.get(kind, {})
        lines += ["", f"## Dataset: {kind}", ""]
        if not d.get("examples"):
            lines.append("no examples")
            continue
        lines += [f"- examples: {d['examples']} from {d['plots']} plots, {d['characters']} characters",
                  f"- labels per example: mean {d['mean_labels_per_example']} "
                  f"(distribution {d['labels_per_example']})",
                  f"- neutral share (examples labelled neutral): {d['neutral_share']}",
                  f"- distinct-1 / distinct-2: {d['distinct_1']} / {d['distinct_2']}",
                  "- top labels: " + ", ".join(f"{k} {v}" for k, v in sorted(
                      d["label_counts"].items(), key=lambda kv: -kv[1])[:8] if v)]
    lines += ["", "## Diversity: MiniLM mean pairwise cosine", "",
              "Groups by the kind of utterance asked for (neutral or emotional), not by label.",
              ""]
    cos = report["embedding_cosine"]
    if "skipped" in cos:
        lines.append(f"not computed: {cos['skipped']}")
    for g, v in cos.items():
        if isinstance(v, dict):
            lines.append(f"- {g}: within character {v.get('within', 'n/a')}, "
                         f"across characters {v.get('across', 'n/a')}")
    lines += [""] + [f"![{p.stem}]({p.name})" for p in images]
    return "\n".join(lines) + "\n"


def write_report(run: Path, out: Path | None = None, embeddings: bool = True) -> Path:
    run = Path(run)
    if not run.is_dir():
        raise EmoPillarsError(f"{run}: run folder not found")
    out = Path(out) if out else run / "stats"
    report = collect(run, embeddings)   # first: a failed check leaves no report folder
    out.mkdir(parents=True, exist_ok=True)
    images = plot_report(report, out)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report, images))
    return out


def run_cli(args) -> int:
    out = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    print((out / "report.md").read_text())
    print(f"report: {out / 'report.md'}")
    return 0
