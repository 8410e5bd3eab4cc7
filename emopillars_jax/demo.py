"""`emopillars demo`: the whole method end to end on the offline defaults.

Phases: generate (six llama.cpp stages + stats) -> train a context-less and a contextual
MiniLM student -> export both to Hugging Face folders verified against PyTorch ->
optionally train a student on the paper's released data (`emopillars=FOLDER`) and score the
context-less students on its validation split and on GoEmotions dev -> optionally
fine-tune on GoEmotions -> predict example sentences -> summary (demo_summary.py).
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
from .demo_summary import print_summary
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
    # folder with the paper's released data, train.jsonl + validation.jsonl (`emopillars data
    # download emopillars`, or the copy in ../shared/data/emopillars): trains a release
    # student beside the generated-data one and scores both on the same held-out data
    emopillars: str | None = None
    release: TrainConfig = TrainConfig(epochs=3, batch_size=32)
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
    # (.get: an eval.json written before these two fields existed still summarises)
    return {split: {"macro_f1": round(m["macro_f1"], 4), "micro_f1": round(m["micro_f1"], 4),
                    "threshold": m["thresholds"]["global"], "examples": m["examples"],
                    "labels_per_example": m.get("labels_per_example"),
                    "every_label_macro_f1": m.get("every_label_macro_f1")}
            for split, m in results.items()}


def held_out_sets(cfg: DemoConfig) -> dict[str, Path]:
    """Real labelled data the context-less students are scored on, when given."""
    sets = {}
    if cfg.emopillars:
        sets["Emo Pillars validation"] = Path(cfg.emopillars) / "validation.jsonl"
    if cfg.goemotions:
        sets["GoEmotions dev"] = Path(cfg.goemotions) / "dev.tsv"
    return sets


def score_students(folders: dict[str, str], sets: dict[str, Path]) -> dict:
    """Each exported student's macro-F1 on each set, at its own threshold (chosen on its own
    dev data) and swept on the set itself (optimistic)."""
    from . import data as data_lib
    from .predict import Predictor
    examples = {name: data_lib.read_examples(path, num_labels=28) for name, path in sets.items()}
    out = {}
    for student, folder in folders.items():
        predictor = Predictor.from_path(folder)
        out[student] = {name: predictor.held_out_scores(ex) for name, ex in examples.items()}
    return out


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

    contextless = {"generated data": exported["contextless"]["folder"]}
    if cfg.emopillars:
        release = Path(cfg.emopillars)
        missing = [n for n in ("train.jsonl", "validation.jsonl") if not (release / n).is_file()]
        if missing:
            raise EmoPillarsError(f"emopillars={release}: no {' or '.join(missing)} there "
                                  "(expected the release's context-less split files)")

        def do_release():
            rcfg = cfg.release.model_copy(deep=True)
            rcfg.out_dir = str(out / "train_release")
            rcfg.data.train = str(release / "train.jsonl")
            rcfg.data.dev = str(release / "validation.jsonl")
            rcfg.data.test = None
            summary = training.train(rcfg)
            folder = out / "export" / "minilm-emopillars-release"
            export_from_checkpoint(Path(rcfg.out_dir) / "checkpoints", folder,
                                   which="latest", verify=True)
            examples = len(training.read_split(rcfg, rcfg.data.train))
            return {"step": summary["step"], "train_examples": examples,
                    "metrics": _eval_summary(rcfg.out_dir), "folder": str(folder)}
        release_student = phases.run("train_release", do_release)
        contextless["released data"] = release_student["folder"]
    else:
        release_student = None
    sets = held_out_sets(cfg)
    scores = phases.run("score_students", lambda: score_students(contextless, sets)) \
        if sets else {}

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

    students_to_ask = {"contextless": exported["contextless"]["folder"]}
    if release_student:
        students_to_ask["released data"] = release_student["folder"]
    if "contextual" in exported:
        students_to_ask["contextual"] = exported["contextual"]["folder"]

    def do_predict():
        rows = []
        for model, folder in students_to_ask.items():
            predictor = Predictor.from_path(folder)
            examples = [e for e in cfg.examples
                        if (e.context is not None) == (model == "contextual")]
            if not examples:
                continue
            preds = predictor.predict([e.text for e in examples],
                                      [e.context for e in examples] if model == "contextual"
                                      else None)
            for e, p in zip(examples, preds):
                top = sorted(p["scores"].items(), key=lambda kv: -kv[1])[:3]
                rows.append({"model": model, "context": e.context, "text": e.text,
                             "labels": p["labels"], "top3": [[k, round(v, 3)] for k, v in top]})
        return rows
    predictions = phases.run("predict", do_predict)

    summary = {
        "dataset": gen["dataset"], "dataset_counts": gen["counts"], "stats": gen["stats"],
        "students": students, "exported": exported, "goemotions": goemotions,
        "release_student": release_student, "held_out_scores": scores,
        "predictions": predictions,
        "phase_seconds": {k: v["seconds"] for k, v in phases.state.items()},
        "wall_seconds_this_run": round(time.perf_counter() - t_start, 1),
        "peak_memory_gb": round(peak_memory_gb(), 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary)
    return summary


def run_cli(args) -> int:
    cfg = load_config(DemoConfig, args.config, args.overrides)
    run_demo(cfg, fresh=args.fresh)
    return 0
