#!/usr/bin/env python
"""Items/hour per synthesis stage: batched llama.cpp engine vs one sequence at a time
(the high-level `Llama`), same model, prompts and machine, in one run.

    python scripts/bench_generate.py --model smollm2-135m --items 8 --repeats 3
    python scripts/bench_generate.py --model /models/mistral-7b-instruct-v0.2.Q4_K_M.gguf \
        --n-gpu-layers -1 --n-seq 32 --items 64        # on a CUDA build

Each repeat uses different plots (so neither engine answers from a warm prompt cache of
the previous repeat), alternates which engine goes first, and the script prints medians
and the batched/single ratio. On a GPU it also prints LLM calls per GPU-hour against the
method's reference of about 1,560 (700K calls in 450 GPU hours).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_gen.config import GenerateConfig, LLMConfig  # noqa: E402
from data_gen.corpus import load_corpus  # noqa: E402
from data_gen.engine import open_engine  # noqa: E402
from data_gen.pipeline import make_request  # noqa: E402
from data_gen.stages import STAGES  # noqa: E402
from emopillars_jax.config import load_config  # noqa: E402

PAPER_CALLS_PER_GPU_HOUR = 700_000 / 450


def items_for(stage: str, plots, n: int, offset: int) -> list[dict]:
    """n synthetic inputs of a stage, grounded in real plots (two items per plot)."""
    out = []
    for k in range(n):
        p = plots[(offset + k // 2) % len(plots)]
        cid = f"{p.plot_id}-c{k % 2:02d}"
        out.append({"plot_id": p.plot_id, "title": p.title, "plot": p.text, "character_id": cid,
                    "character": p.title.split()[0], "description": "a character of the story",
                    "utterance_id": f"{cid}-u{k:02d}",
                    "utterance": f"I never thought it would come to this, not in {p.title}.",
                    "emotions_used": ["surprise", "sadness"],
                    "context": p.text.split(". ")[0] + ".",
                    "context_clean": p.text.split(". ")[0] + "."})
    if stage == "characters":   # one item per plot
        out = [{**it, "plot_id": f"{plots[(offset + k) % len(plots)].plot_id}",
                "plot": plots[(offset + k) % len(plots)].text} for k, it in enumerate(out)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-seq", type=int, default=8)
    ap.add_argument("--n-ctx", type=int, default=2048, help="per sequence")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--n-batch", type=int, default=512, help="llama.cpp logical batch")
    ap.add_argument("--items", type=int, default=8, help="requests per stage per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64, help="cap per answer (both engines)")
    ap.add_argument("--answer-mode", default="json", choices=["json", "free"])
    ap.add_argument("--stages", default=",".join(STAGES))
    args = ap.parse_args()

    cfg = load_config(GenerateConfig, None, [f"answer_mode={args.answer_mode}"])
    decoding = {name: getattr(cfg.decoding, name).model_copy(
        update={"max_tokens": min(args.max_tokens, getattr(cfg.decoding, name).max_tokens)})
        for name in STAGES}
    cfg.decoding = cfg.decoding.model_copy(update=decoding)
    common = dict(model=args.model, n_ctx=args.n_ctx, n_threads=args.threads,
                  n_gpu_layers=args.n_gpu_layers, n_batch=args.n_batch)
    engines = {"single": open_engine(LLMConfig(engine="single", **common)),
               "batched": open_engine(LLMConfig(engine="batched", n_seq=args.n_seq, **common))}
    plots = load_corpus("embedded")
    stages = [s for s in args.stages.split(",") if s]
    print(f"model {engines['single'].model_path.name}, {args.items} items/stage, "
          f"{args.repeats} repeats, batched n_seq={args.n_seq}, max_tokens<={args.max_tokens}")
    rates: dict[str, dict[str, list[float]]] = {s: {"single": [], "batched": []} for s in stages}
    tokens = {"single": 0, "batched": 0}
    prompt_tokens, n_calls = 0, 0
    for r in range(args.repeats):
        for stage in stages:
            reqs = [make_request(STAGES[stage], it, cfg, 0)
                    for it in items_for(stage, plots, args.items, offset=r * args.items)]
            order = ("single", "batched") if r % 2 == 0 else ("batched", "single")
            for name in order:
                eng = engines[name]
                t0 = time.perf_counter()
                out = eng.generate(reqs)
                dt = time.perf_counter() - t0
                tokens[name] += sum(c.n_generated for c in out)
                if name == "single":
                    prompt_tokens += sum(c.n_prompt for c in out)
                    n_calls += len(out)
                rates[stage][name].append(3600 * len(reqs) / dt)
    print(f"\n{'stage':12s} {'single items/h':>15s} {'batched items/h':>16s} {'ratio':>7s}")
    ratios = []
    for stage in stages:
        s, b = (statistics.median(rates[stage][k]) for k in ("single", "batched"))
        ratios.append(b / s)
        print(f"{stage:12s} {s:15.0f} {b:16.0f} {b / s:6.2f}x")
    print(f"{'median':12s} {'':15s} {'':16s} {statistics.median(ratios):6.2f}x")
    print("generated tokens:", tokens, f"per call: {prompt_tokens / n_calls:.0f} prompt + "
          f"{tokens['single'] / n_calls:.0f} generated (single engine)")
    if args.n_gpu_layers:
        calls = {k: statistics.median(v for st in stages for v in rates[st][k])
                 for k in ("single", "batched")}
        for k, v in calls.items():
            print(f"{k}: {v:,.0f} LLM calls per GPU-hour "
                  f"({v / PAPER_CALLS_PER_GPU_HOUR:.1f}x the paper's ~1,560)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
