#!/usr/bin/env python
"""Stage 3 (soft labels) in scoring mode against the paper's batched JSON answers: seconds
per utterance on the same utterances, the same model and machine, in one run.

    python scripts/bench_label_scoring.py                       # Qwen 0.5B, 16 utterances
    python scripts/bench_label_scoring.py --utterances runs/bench/utterances.jsonl --n 32 \
        --repeats 3 --threads 2

Both modes run as `emopillars generate` runs the labels stage (pipeline.run_stage with
answer_mode=json, label_scoring.run_scoring_stage with labels_method=score: fixed chunks,
every call from an empty cache), into fresh stores each repeat, with one batched engine
(n_seq sequences; scoring.n_seq utterances scored together). Repeats alternate which mode
goes first; the script prints medians and the ratio (target: scoring >= 2x JSON's
utterances per second). Without --utterances the utterances are sentences of the embedded
plots; --utterances takes any JSONL with an 'utterance' string (and optionally
'character'), e.g. a run's dataset/contextless/*.jsonl. Writes OUT/result.json and a PNG.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_gen.config import GenerateConfig  # noqa: E402
from data_gen.corpus import load_corpus  # noqa: E402
from data_gen.engine import open_engine  # noqa: E402
from data_gen.label_scoring import run_scoring_stage, scorer_for  # noqa: E402
from data_gen.pipeline import run_stage  # noqa: E402
from data_gen.stages import STAGES  # noqa: E402
from data_gen.store import Store, read_jsonl  # noqa: E402
from emopillars_jax.config import load_config  # noqa: E402
from emopillars_jax.errors import EmoPillarsError  # noqa: E402


def corpus_utterances(n: int) -> list[dict]:
    """n sentences of 8-30 words from the embedded plots, one plot after the other (the
    lengths of generated utterances, without spending the benchmark's time writing them)."""
    per_plot = []
    for p in load_corpus("embedded"):
        sents = [s for s in re.split(r"(?<=[.!?])\s+", p.text) if 8 <= len(s.split()) <= 30]
        per_plot.append([(p, s) for s in sents])
    picked = [x for row in itertools.zip_longest(*per_plot) for x in row if x][:n]
    if len(picked) < n:
        raise EmoPillarsError(f"the embedded corpus has only {len(picked)} such sentences")
    return [{"utterance_id": f"{p.plot_id}-s{i:03d}", "plot_id": p.plot_id,
             "character": "Someone", "utterance": s, "target_emotion": None}
            for i, (p, s) in enumerate(picked)]


def read_utterances(path: Path, n: int) -> list[dict]:
    rows = read_jsonl(path)
    for i, r in enumerate(rows, 1):
        if not isinstance(r.get("utterance"), str):
            raise EmoPillarsError(f"{path}:{i}: expected an object with an 'utterance' string")
    if len(rows) < n:
        raise EmoPillarsError(f"{path}: {len(rows)} utterances, --n asks for {n}")
    return [{"utterance_id": r.get("utterance_id") or f"bench-{i:05d}",
             "utterance": r["utterance"], "character": r.get("character") or "Someone",
             "target_emotion": r.get("target_emotion"), **{k: r[k] for k in ("plot_id",)
                                                           if k in r}}
            for i, r in enumerate(rows[:n])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--utterances", type=Path, help="JSONL with 'utterance' (and 'character')")
    ap.add_argument("--n", type=int, default=16, help="utterances")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--n-seq", type=int, default=8, help="JSON: sequences; scoring: utterances")
    ap.add_argument("--n-ctx", type=int, default=2048, help="per sequence")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--prompt", default="project", choices=["paper", "project", "short"])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_label_scoring"))
    args = ap.parse_args()

    common = [f"llm.model={args.model}", f"llm.n_ctx={args.n_ctx}", f"llm.n_seq={args.n_seq}",
              f"llm.n_gpu_layers={args.n_gpu_layers}", "progress=false",
              f"scoring.n_seq={min(args.n_seq, 9)}", f"scoring.prompt={args.prompt}"]
    if args.threads:
        common.append(f"llm.n_threads={args.threads}")
    json_cfg = load_config(GenerateConfig, None, common + ["answer_mode=json"])
    score_cfg = load_config(GenerateConfig, None, common + ["labels_method=score"])
    engine = open_engine(json_cfg.llm)
    args.out.mkdir(parents=True, exist_ok=True)
    items = read_utterances(args.utterances, args.n) if args.utterances \
        else corpus_utterances(args.n)
    scorer_for(engine, score_cfg)      # its llama.cpp context, made outside the timing
    print(f"model {engine.model_path.name}, {len(items)} utterances, {args.repeats} repeats, "
          f"n_seq={args.n_seq}, threads={engine.n_threads}, load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    modes = {"json": (run_stage, json_cfg), "score": (run_scoring_stage, score_cfg)}
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    rejected = {m: 0 for m in modes}
    for r in range(args.repeats):
        for mode in (("json", "score") if r % 2 == 0 else ("score", "json")):
            runner, cfg = modes[mode]
            work = args.out / f"repeat{r}-{mode}"
            shutil.rmtree(work, ignore_errors=True)
            store = Store(work / "labels.jsonl", "utterance_id")
            t0 = time.perf_counter()
            summary = runner(STAGES["labels"], items, engine, cfg, store,
                             Store(work / "rejects.jsonl", "id"))
            dt = time.perf_counter() - t0
            seconds[mode].append(dt / len(items))
            rejected[mode] += summary["rejected"]
            print(f"repeat {r} {mode:5s}: {dt:7.1f} s, {dt / len(items):.2f} s/utterance, "
                  f"{summary['answered']} labelled, {summary['rejected']} rejected", flush=True)
    med = {m: statistics.median(v) for m, v in seconds.items()}
    print(f"\nmedian seconds per utterance: json {med['json']:.2f}, score {med['score']:.2f}; "
          f"scoring labels {med['json'] / med['score']:.2f}x the utterances per second "
          f"(target >= 2x); JSON rejects {rejected['json']}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    (args.out / "result.json").write_text(json.dumps(
        {"model": engine.model_path.name, "n": len(items), "repeats": args.repeats,
         "n_seq": args.n_seq, "threads": engine.n_threads, "seconds_per_utterance": seconds,
         "median": med, "ratio": med["json"] / med["score"], "json_rejected": rejected["json"]},
        indent=2) + "\n")
    plot(seconds, args.out / "seconds_per_utterance.png", engine.model_path.name, len(items))
    engine.close()
    return 0


def plot(seconds: dict[str, list[float]], path: Path, model: str, n: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    names = list(seconds)
    ax.bar(names, [statistics.median(seconds[m]) for m in names], color=["#999", "#3a7"])
    for i, m in enumerate(names):
        ax.plot([i] * len(seconds[m]), seconds[m], "k.", label="repeats" if i == 0 else None)
    ax.set_ylabel("seconds per utterance (median)")
    ax.set_title(f"stage 3, {model}, {n} utterances", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
