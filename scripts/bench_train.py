#!/usr/bin/env python
"""Training throughput: the JAX/Flax step vs PyTorch transformers on the same MiniLM.

Same weights (the packaged all-MiniLM-L6-v2 + a new 28-label head), batch, sequence length,
loss (sigmoid BCE), optimizer (AdamW, weight decay 0.01, clip 1.0) and dropout; torch uses
as many threads as cores. Each framework runs in its own subprocess so its peak memory
(max RSS) is its own. Prints median step time, examples/s, peak memory and the ratio,
and reads both against this machine's large-GEMM peak (measured in the same run): the
step's matmul GFLOP/s and the share of the peak a 1.2x JAX step would need.
Each worker also counts the page faults of its timed steps. `--host-memory both` runs each
framework with and without emopillars_jax.host_memory (what `emopillars train` does on CPU:
XLA programs on the calling thread, glibc keeps freed memory; torch gets the glibc part).

  .venv/bin/python scripts/bench_train.py [--batch 32] [--length 48] [--steps 10]
  .venv/bin/python scripts/bench_train.py --epoch ../shared/data/goemotions/train.tsv \
      --epoch-fraction 0.1 --epoch-only --buckets 16,32,64 --buckets 12,16,20,24,32,48,64
      # time part of a GoEmotions epoch under two length-bucket sets
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "I can't believe they finally fixed the bridge, it took them years!",
    "Thanks so much for the help yesterday, you saved my whole week.",
    "Why would anyone leave a dog alone in a hot car like that?",
    "The meeting moved to Thursday at ten.",
    "I miss the old house, the garden, and the way the kitchen smelled in winter.",
    "Honestly this is the funniest thing I have read all month.",
]


def texts(n):
    return [SENTENCES[i % len(SENTENCES)] + " " + SENTENCES[(i * 7 + 3) % len(SENTENCES)]
            for i in range(n)]


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_jax(args):
    import jax
    import numpy as np
    from emopillars_jax import sharding as shd
    from emopillars_jax.config import build_config
    from emopillars_jax.train_config import TrainConfig
    from emopillars_jax.training import Steps, build_optimizer, load_bundle
    from emopillars_jax.tokenization import Tokenizer
    from emopillars_jax.assets import resolve
    cfg = build_config(TrainConfig, {"model": {"path": "minilm-l6", "dtype": args.dtype},
                                     "data": {"train": "x", "max_length": args.length},
                                     "optim": {"lr": 2e-5, "schedule": "constant",
                                               "warmup_ratio": 0.0}})
    bundle = load_bundle(cfg)
    tok = Tokenizer.from_folder(resolve("minilm-l6", kind="encoder"))
    enc = tok(texts(args.batch), max_length=args.length, length=args.length)
    rng = np.random.default_rng(0)
    batch = {**enc, "targets": (rng.random((args.batch, 28)) < 0.1).astype(np.float32),
             "weights": np.ones(args.batch, np.float32)}
    steps = Steps(bundle.model, shd.make_mesh({"data": -1}), cfg.mesh.rules,
                  build_optimizer(cfg.optim, 1000), seed=0)
    return time_steps(lambda i: jax.block_until_ready(steps.train(batch, i)["loss"]), args)


def run_torch(args):
    import torch
    from transformers import BertForSequenceClassification
    from emopillars_jax.assets import resolve
    from emopillars_jax.tokenization import Tokenizer
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    folder = resolve("minilm-l6", kind="encoder")
    model = BertForSequenceClassification.from_pretrained(str(folder), num_labels=28)
    model.train()
    tok = Tokenizer.from_folder(folder)
    enc = {k: torch.from_numpy(v).long() for k, v in
           tok(texts(args.batch), max_length=args.length, length=args.length).items()}
    targets = (torch.rand(args.batch, 28, generator=torch.Generator().manual_seed(0)) < 0.1).float()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=2e-5, eps=1e-8)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    def step(i):
        logits = model(**enc).logits
        loss = loss_fn(logits, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time_steps(step, args)


def time_steps(step, args) -> tuple[list[float], float]:
    """Seconds of each timed step (after the warm-up ones) and the page faults per timed
    step (minor faults: memory the kernel had to map and zero for this process)."""
    for i in range(args.warmup):
        step(i)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for i in range(args.warmup, args.warmup + args.steps):
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return times, faults / max(1, args.steps)


def step_gflop(batch: int, length: int, first_token_only: bool = False) -> float:
    """Matmul GFLOP of one training step (forward + backward = 3x the forward) of the
    packaged MiniLM at this batch and length; element-wise work is not counted.
    `first_token_only`: the JAX model's last layer computes queries, attention output and
    feed-forward for the first token only (all its head reads); torch computes them all."""
    from emopillars_jax.assets import resolve
    hf = json.loads((resolve("minilm-l6", kind="encoder") / "config.json").read_text())
    h, inter, layers = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]

    def layer(queries):   # keys/values over all tokens, the rest over the query positions
        return (2 * batch * length * 2 * h * h
                + 2 * batch * queries * (2 * h * h + 2 * h * inter)
                + 4 * batch * queries * length * h)
    last = layer(1 if first_token_only else length)
    head = 2 * batch * (h * h + h * 28)
    return 3 * ((layers - 1) * layer(length) + last + head) / 1e9


def run_gemm(args, n: int = 2048, repeats: int = 5):
    """Large fp32 GEMM throughput (GFLOP/s) of each framework: this machine's practical
    matmul peak, against which the training steps' matmul rates are read."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    torch.set_num_threads(os.cpu_count())
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    ta, ja = torch.from_numpy(a), jnp.asarray(a)
    dot = jax.jit(jnp.dot)
    out = {}
    for name, fn in (("torch", lambda: ta @ ta),
                     ("jax", lambda: jax.block_until_ready(dot(ja, ja)))):
        fn(), fn()
        best = min(_timed(fn) for _ in range(repeats))
        out[f"{name}_gflops"] = 2 * n ** 3 / best / 1e9
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_epoch(args):
    """A fraction of one epoch of `args.epoch` through the real training pipeline."""
    import jax
    from emopillars_jax import data as D
    from emopillars_jax import sharding as shd
    from emopillars_jax.config import build_config
    from emopillars_jax.train_config import TrainConfig
    from emopillars_jax.training import Steps, build_optimizer, load_bundle, read_split, \
        bucket_boundaries
    buckets = [int(x) for x in args.buckets[0].split(",")]
    cfg = build_config(TrainConfig, {"batch_size": args.batch,
                                     "model": {"path": "minilm-l6"},
                                     "data": {"train": args.epoch, "max_length": 64,
                                              "bucket_boundaries": buckets}})
    bundle = load_bundle(cfg)
    ex = read_split(cfg, args.epoch)
    t0 = time.perf_counter()
    enc = D.encode(ex, bundle.encode_fn)
    t_tok = time.perf_counter() - t0
    loader = D.TrainLoader({0: enc}, total=len(ex), num_shards=1, global_batch=args.batch,
                           seed=0, boundaries=bucket_boundaries(cfg), pad_id=bundle.pad_id)
    steps = Steps(bundle.model, shd.make_mesh({"data": -1}), cfg.mesh.rules,
                  build_optimizer(cfg.optim, loader.steps_per_epoch), seed=0)
    n = max(1, int(loader.steps_per_epoch * args.epoch_fraction))
    # compile every bucket shape first (a one-off cost, reported separately)
    t0 = time.perf_counter()
    import numpy as np
    for length in bucket_boundaries(cfg):
        b = D.pad_batch(enc, list(range(args.batch)), length, bundle.pad_id)
        steps._train.lower(steps.params, steps.opt_state,
                           shd.global_batch(b, steps.batch_sharding),
                           shd.put_global(np.int32(0), steps.repl)).compile()
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n):
        m = steps.train(next(loader), i)
    jax.block_until_ready(m["loss"])
    t_run = time.perf_counter() - t0
    return {"examples": len(ex), "steps_per_epoch": loader.steps_per_epoch, "timed_steps": n,
            "tokenize_s": t_tok, "compile_s": t_compile, "timed_s": t_run,
            "epoch_estimate_min": (t_run / n * loader.steps_per_epoch + t_tok) / 60}


def worker(args):
    from emopillars_jax import host_memory
    if args.host_memory == "reuse":   # before JAX starts its backend
        if args.worker == "torch":
            host_memory.keep_freed_memory()
        elif args.worker != "gemm":
            assert host_memory.reuse_host_memory(), "host memory reuse did not apply"
    if args.worker == "epoch":
        out = run_epoch(args)
    elif args.worker == "gemm":
        out = run_gemm(args)
    else:
        times, faults = run_jax(args) if args.worker == "jax" else run_torch(args)
        out = {"median_step_s": statistics.median(times), "steps": len(times),
               "examples_per_s": args.batch / statistics.median(times),
               "page_faults_per_step": faults}
    out["peak_rss_mb"] = peak_mb()
    print("RESULT " + json.dumps(out), flush=True)


def spawn(kind, args, host_memory="default"):
    cmd = [sys.executable, __file__, "--worker", kind] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if v is not None and k not in ("worker", "buckets", "epoch_only", "host_memory", "rounds")]
    cmd += [f"--buckets={b}" for b in args.buckets or []] + [f"--host-memory={host_memory}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{kind} worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def medians(results: list[dict]) -> dict:
    """Each field's median over the rounds of one worker kind."""
    return {f: statistics.median(r[f] for r in results) for f in results[0]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=48)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--rounds", type=int, default=1,
                   help="run each worker this many times (alternating order); report medians")
    p.add_argument("--epoch", help="a GoEmotions-style training file: time part of one epoch")
    p.add_argument("--epoch-fraction", type=float, default=0.05)
    p.add_argument("--buckets", action="append", default=None,
                   help="length buckets of the epoch run, comma-separated; repeat to compare "
                        "(the first is the baseline of the printed ratios)")
    p.add_argument("--epoch-only", action="store_true", help="skip the JAX-vs-torch step")
    p.add_argument("--host-memory", default="reuse", choices=["default", "reuse", "both"],
                   help="reuse: as `emopillars train` runs on CPU (emopillars_jax.host_memory; "
                        "torch gets its glibc part); default: both frameworks as they come")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    settings = ["default", "reuse"] if args.host_memory == "both" else [args.host_memory]
    if not args.epoch_only:
        print(f"MiniLM-L6 training step, batch {args.batch}, length {args.length}, "
              f"{os.cpu_count()} cores, {args.steps} timed steps after {args.warmup} warm-up, "
              f"{args.rounds} round(s)")
        runs = {}
        for r in range(args.rounds):   # ABBA order, so a drift of the machine cancels
            for m in settings if r % 2 == 0 else settings[::-1]:
                for k in ("jax", "torch") if r % 2 == 0 else ("torch", "jax"):
                    runs.setdefault((k, m), []).append(spawn(k, args, m))
        res = {key: medians(rs) for key, rs in runs.items()}
        res["gemm"] = spawn("gemm", args)
        peak = max(res["gemm"]["torch_gflops"], res["gemm"]["jax_gflops"])
        gflop = step_gflop(args.batch, args.length)
        jax_gflop = step_gflop(args.batch, args.length, first_token_only=True)
        for m in settings:
            for k in ("jax", "torch"):
                r = res[k, m]
                rate = (jax_gflop if k == "jax" else gflop) / r["median_step_s"]
                print(f"{k:6s} {m:7s} median step {r['median_step_s'] * 1000:7.1f} ms "
                      f"{r['examples_per_s']:6.1f} examples/s  peak RSS "
                      f"{r['peak_rss_mb']:5.0f} MB  page faults/step "
                      f"{r['page_faults_per_step']:7.0f}  matmul {rate:5.1f} GFLOP/s = "
                      f"{100 * rate / peak:3.0f}% of the GEMM peak")
        for m in settings:
            ratio = res["jax", m]["examples_per_s"] / res["torch", m]["examples_per_s"]
            print(f"ratio JAX/torch examples/s, both with glibc {m}: {ratio:.2f}x")
        if len(settings) == 2:   # as each is run out of the box
            ratio = res["jax", "reuse"]["examples_per_s"] / \
                res["torch", "default"]["examples_per_s"]
            print(f"ratio JAX as emopillars trains / torch as it comes: {ratio:.2f}x")
        # the roofline: what a 1.2x JAX step would need from the cores
        need = 1.2 * gflop / res["torch", settings[0]]["median_step_s"]
        print(f"step matmuls {gflop:.1f} GFLOP (JAX {jax_gflop:.1f}: its last layer works on the "
              f"first token only); large-GEMM peak {peak:.0f} GFLOP/s (torch "
              f"{res['gemm']['torch_gflops']:.0f}, XLA {res['gemm']['jax_gflops']:.0f}); "
              f"1.2x torch needs {need:.0f} GFLOP/s = {100 * need / peak:.0f}% of that peak "
              f"for the whole step")
    if args.epoch:
        runs = {}
        for r in range(args.rounds):
            for buckets in args.buckets or ["16,24,32,48,64"]:
                for m in settings if r % 2 == 0 else settings[::-1]:
                    one = argparse.Namespace(**{**vars(args), "buckets": [buckets]})
                    runs.setdefault((buckets, m), []).append(spawn("epoch", one, m))
        first = None
        for (buckets, m), rs in runs.items():
            e = medians(rs)
            first = first or e
            print(f"epoch of {args.epoch}, buckets {buckets}, host memory {m}: "
                  f"{e['examples']:.0f} examples, {e['steps_per_epoch']:.0f} steps; "
                  f"{e['timed_steps']:.0f} steps in {e['timed_s']:.1f} s (compile "
                  f"{e['compile_s']:.0f} s, tokenize {e['tokenize_s']:.1f} s) -> full epoch "
                  f"about {e['epoch_estimate_min']:.1f} "
                  f"min ({first['epoch_estimate_min'] / e['epoch_estimate_min']:.2f}x the first), "
                  f"peak RSS {e['peak_rss_mb']:.0f} MB"
                  + (f" (median of {len(rs)} runs)" if len(rs) > 1 else ""))


if __name__ == "__main__":
    main()
