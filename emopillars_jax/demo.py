"""`emopillars demo`: the whole method end to end on the offline defaults.

Phases: generate (six llama.cpp stages + stats) -> train a context-less and a contextual
MiniLM student -> export both to Hugging Face folders verified against PyTorch ->
optionally fine-tune on GoEmotions -> predict example sentences -> summary.
Each finished phase is recorded in OUT/demo_state.json, so a re-run resumes (generation and
training also resume inside a phase); `--fresh` starts over.
"""
from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from pathlib import Path

from pydantic import Field

from data_gen.config import GenerateConfig

from .config import Section, dump_config, load_config
from .errors import EmoPillarsError
from .train_config import TrainConfig

log = logging.getLogger(__name__)


class Example(Section):
    text: str
    context: str | None = None


class DemoConfig(Section):
    """Sub-configs as in their own commands; their out_dir and data paths are derived here."""
    out_dir: str = "runs/demo"
    generate: GenerateConfig = GenerateConfig()
    stats_embeddings: bool = True
    train: TrainConfig = TrainConfig()
    contextual: bool = True         # also train a context-aware student
    goemotions: str | None = None   # folder with GoEmotions train.tsv/dev.tsv, e.g. ../shared/data/goemotions
    finetune: TrainConfig = TrainConfig(epochs=1, batch_size=32)
    finetune_max_examples: int | None = Field(4000, ge=1)   # GoEmotions train rows used
    examples: list[Example] = []


def peak_memory_gb() -> float:
    """Peak resident memory of this process and its children (ru_maxrss is KiB on Linux)."""
    kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return kib / 2**20


class Phases:
    """Runs named phases once, timing them and recording results in a state file."""

    def __init__(self, out: Path):
        self.path = out / "demo_state.json"
        self.state = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def run(self, name: str, fn):
        if name in self.state:
            log.info("demo: %s already done (%.0f s), skipping", name, self.state[name]["seconds"])
            return self.state[name]["result"]
        print(f"\n=== demo: {name} ===", flush=True)
        t0 = time.perf_counter()
        result = fn()
        self.state[name] = {"seconds": round(time.perf_counter() - t0, 1), "result": result}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.path)
        return result


def _student_config(cfg: DemoConfig, out: Path, mode: str) -> TrainConfig:
    data_dir = out / "generate" / "dataset" / mode
    train = cfg.train.model_copy(deep=True)
    train.out_dir = str(out / f"train_{mode}")
    train.data.mode = mode
    train.data.train = str(data_dir / "train.jsonl")
    train.data.dev = str(data_dir / "validation.jsonl")
    train.data.test = str(data_dir / "test.jsonl")
    if mode == "contextual":
        train.data.max_length = max(train.data.max_length, 256)
        train.data.bucket_boundaries = sorted(set(train.data.bucket_boundaries) | {128, 256})
    return train


def _eval_summary(train_out: str) -> dict:
    path = Path(train_out) / "eval" / "eval.json"
    if not path.is_file():
        return {}
    results = json.loads(path.read_text())
    return {split: {"macro_f1": round(m["macro_f1"], 4), "micro_f1": round(m["micro_f1"], 4),
                    "threshold": m["thresholds"]["global"]} for split, m in results.items()}


def run_demo(cfg: DemoConfig, fresh: bool = False) -> dict:
    from data_gen import stats
    from data_gen.pipeline import generate

    from . import training
    from .export import export_from_checkpoint
    from .host_memory import reuse_host_memory
    from .predict import Predictor

    # now, before the stats' embeddings start JAX (train() would find it started)
    reuse_host_memory(cfg.train.reuse_host_memory)
    out = Path(cfg.out_dir)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.yaml").write_text(dump_config(cfg))
    phases = Phases(out)
    t_start = time.perf_counter()

    gen_cfg = cfg.generate.model_copy(deep=True)
    gen_cfg.out_dir = str(out / "generate")

    def do_generate():
        generate(gen_cfg)
        counts = json.loads((out / "generate" / "manifest.json").read_text())["dataset"]
        report = stats.write_report(out / "generate", embeddings=cfg.stats_embeddings)
        return {"dataset": str(out / "generate" / "dataset"), "counts": counts,
                "stats": str(report)}
    gen = phases.run("generate", do_generate)

    modes = ["contextless"] + (["contextual"] if cfg.contextual else [])
    students = {}
    for mode in modes:
        tcfg = _student_config(cfg, out, mode)
        if not Path(tcfg.data.train).is_file() or not Path(tcfg.data.train).stat().st_size:
            raise EmoPillarsError(f"{tcfg.data.train}: the generated {mode} training split is "
                                  "empty; generate more plots (generate.corpus.max_plots)")

        def do_train(tcfg=tcfg):
            summary = training.train(tcfg)
            return {"checkpoints": str(Path(tcfg.out_dir) / "checkpoints"),
                    "step": summary["step"], "metrics": _eval_summary(tcfg.out_dir),
                    "report": str(Path(tcfg.out_dir) / "eval" / "eval.md")}
        students[mode] = phases.run(f"train_{mode}", do_train)

    exported = {}
    for mode in modes:
        def do_export(mode=mode):
            folder = out / "export" / f"minilm-emopillars-{mode}"
            export_from_checkpoint(students[mode]["checkpoints"], folder, verify=True)
            return {"folder": str(folder), "verified": True}
        exported[mode] = phases.run(f"export_{mode}", do_export)

    if cfg.goemotions:
        def do_finetune():
            from .benchmarks.runner import prepare
            run = prepare("goemotions", cfg.goemotions, out / "goemotions" / "data")[0]
            ft = cfg.finetune.model_copy(deep=True)
            ft.out_dir = str(out / "goemotions" / "train")
            ft.model.path = exported["contextless"]["folder"]
            ft.data.train, ft.data.dev, ft.data.test = str(run.train), str(run.dev), None
            ft.data.max_examples = cfg.finetune_max_examples
            summary = training.train(ft)
            return {"step": summary["step"], "metrics": _eval_summary(ft.out_dir),
                    "report": str(Path(ft.out_dir) / "eval" / "eval.md")}
        goemotions = phases.run("finetune_goemotions", do_finetune)
    else:
        goemotions = None
        print("\ndemo: no GoEmotions files given, skipping the fine-tune. To include it, get "
              "the official TSVs (`emopillars data download goemotions`, or the copy in "
              "../shared/data/goemotions) and run `make demo DEMO_ARGS=goemotions=PATH`.")

    def do_predict():
        rows = []
        for mode in modes:
            predictor = Predictor.from_path(exported[mode]["folder"])
            examples = [e for e in cfg.examples if (e.context is not None) == (mode == "contextual")]
            if not examples:
                continue
            preds = predictor.predict([e.text for e in examples],
                                      [e.context for e in examples] if mode == "contextual" else None)
            for e, p in zip(examples, preds):
                top = sorted(p["scores"].items(), key=lambda kv: -kv[1])[:3]
                rows.append({"model": mode, "context": e.context, "text": e.text,
                             "labels": p["labels"], "top3": [[k, round(v, 3)] for k, v in top]})
        return rows
    predictions = phases.run("predict", do_predict)

    summary = {
        "dataset": gen["dataset"], "dataset_counts": gen["counts"], "stats": gen["stats"],
        "students": students, "exported": exported, "goemotions": goemotions,
        "predictions": predictions,
        "phase_seconds": {k: v["seconds"] for k, v in phases.state.items()},
        "wall_seconds_this_run": round(time.perf_counter() - t_start, 1),
        "peak_memory_gb": round(peak_memory_gb(), 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary)
    return summary


def print_summary(s: dict) -> None:
    print("\n=== Emo Pillars demo: summary ===")
    print(f"dataset      {s['dataset']}")
    for name, c in s["dataset_counts"].items():
        print(f"  {name:12s} " + "  ".join(f"{k}={v}" for k, v in c.items()))
    print(f"stats        {s['stats']}/report.md (+ PNG plots)")
    for mode, st in s["students"].items():
        metrics = "  ".join(f"{split} macro-F1 {m['macro_f1']:.3f} (thr {m['threshold']:.2f})"
                            for split, m in st["metrics"].items())
        print(f"student {mode:12s} checkpoints {st['checkpoints']}\n  {metrics}\n  report {st['report']}")
    for mode, ex in s["exported"].items():
        print(f"exported {mode:11s} {ex['folder']} (logits verified against PyTorch)")
    if s["goemotions"]:
        m = s["goemotions"]["metrics"].get("dev", {})
        print(f"GoEmotions fine-tune: dev macro-F1 {m.get('macro_f1', float('nan')):.3f}")
    print("predictions:")
    for row in s["predictions"]:
        ctx = f"[{row['context'][:50]}...] " if row["context"] else ""
        print(f"  ({row['model']}) {ctx}{row['text']!r}\n      -> {row['labels'] or '-'}  "
              f"top3 {row['top3']}")
    print("phase times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s["phase_seconds"].items()))
    print(f"peak memory {s['peak_memory_gb']:.2f} GB; this run {s['wall_seconds_this_run']:.0f} s")


def run_cli(args) -> int:
    cfg = load_config(DemoConfig, args.config, args.overrides)
    run_demo(cfg, fresh=args.fresh)
    return 0
