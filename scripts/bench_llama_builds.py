#!/usr/bin/env python
"""Seconds per synthesis stage for two or more llama.cpp builds (e.g. AVX2 against AVX-512
kernels), the batched engine on the same model and requests, builds alternated in rounds.

Each build is a folder holding libllama.so and its ggml libraries; `pip` means the one
installed with llama-cpp-python. Build one from llama-cpp-python's sdist with, e.g.:

    cmake -S llama_cpp_python-0.3.36/vendor/llama.cpp -B /tmp/avx2 -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
        -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF          # + -DGGML_AVX512=ON ...
    ninja -C /tmp/avx2 llama
    python scripts/bench_llama_builds.py --lib /tmp/avx2/bin --lib pip --rounds 2

A library is chosen when llama_cpp is imported, so every measurement runs in a fresh
process (LLAMA_CPP_LIB_PATH); the first --lib is the baseline of the printed ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def worker(model: str, items: int, stages: list[str], offset: int) -> dict[str, float]:
    from bench_generate import items_for
    from data_gen.config import GenerateConfig, LLMConfig
    from data_gen.corpus import load_corpus
    from data_gen.engine import open_engine
    from data_gen.pipeline import make_request
    from data_gen.stages import STAGES
    from emopillars_jax.config import load_config

    cfg = load_config(GenerateConfig, None, ["answer_mode=json"])
    engine = open_engine(LLMConfig(engine="batched", n_seq=8, model=model, n_ctx=2048))
    plots = load_corpus("embedded")
    seconds = {}
    for stage in stages:
        reqs = [make_request(STAGES[stage], it, cfg, 0)
                for it in items_for(stage, plots, items, offset=offset)]
        t0 = time.perf_counter()
        engine.generate(reqs)
        seconds[stage] = time.perf_counter() - t0
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", action="append", default=[],
                    help="folder with libllama.so, or `pip` (give two or more)")
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--items", type=int, default=8, help="requests per stage")
    ap.add_argument("--stages", default="labels,context,utterances")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    if args.worker:
        print(json.dumps(worker(args.model, args.items, stages, offset=2 * args.items)))
        return 0
    if len(args.lib) < 2:
        ap.error("give at least two --lib")
    for lib in args.lib:
        if lib != "pip" and not (Path(lib) / "libllama.so").is_file():
            ap.error(f"--lib {lib}: no libllama.so in that folder")
    runs: dict[str, list[dict[str, float]]] = {lib: [] for lib in args.lib}
    for r in range(args.rounds):
        for lib in (args.lib if r % 2 == 0 else args.lib[::-1]):
            env = dict(os.environ)
            env.pop("LLAMA_CPP_LIB_PATH", None)
            if lib != "pip":
                env["LLAMA_CPP_LIB_PATH"] = str(Path(lib).resolve())
            out = subprocess.run([sys.executable, __file__, "--worker", "--model", args.model,
                                  "--items", str(args.items), "--stages", ",".join(stages)],
                                 env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{lib}: worker failed ({out.returncode}): {out.stderr.strip()[-500:]}")
            runs[lib].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {lib}: " + ", ".join(f"{k} {v:.1f}s" for k, v in runs[lib][-1].items()),
                  flush=True)

    def medians(lib: str) -> dict[str, float]:
        rows = [{**run, "total": sum(run.values())} for run in runs[lib]]
        return {k: statistics.median(row[k] for row in rows) for k in rows[0]}

    base = medians(args.lib[0])
    print(f"\nmedian seconds over {args.rounds} rounds (ratio: {args.lib[0]} / build)")
    for lib in args.lib:
        med = medians(lib)
        print(f"{lib}: " + ", ".join(f"{k} {v:.1f}s ({base[k] / v:.2f}x)" for k, v in med.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
