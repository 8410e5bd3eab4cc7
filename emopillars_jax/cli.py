"""The `emopillars` command line.

Each subcommand's arguments are declared here; its work lives in the module named in
COMMANDS and is imported only when that subcommand runs (so `--help` stays fast and
does not start JAX). Commands whose capability is not built yet say so and exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import ConfigError, EmoPillarsError, NotBuiltError

# name -> ("package.module:function" taking the parsed args, or None), one-line help
COMMANDS: dict[str, tuple[str | None, str]] = {
    "generate": ("data_gen.pipeline:run_cli",
                 "synthesise a labelled dataset with a llama.cpp LLM (six stages)"),
    "stats": ("data_gen.stats:run_cli", "report and plot statistics of a generated dataset"),
    "teacher-eval": ("data_gen.teacher_eval:run_cli",
                     "score a GGUF teacher's soft labels against reference labels "
                     "(default: the paper's released data)"),
    "train": ("emopillars_jax.training:run_train",
              "train an encoder as a multi-label emotion classifier"),
    "evaluate": ("emopillars_jax.training:run_evaluate",
                 "evaluate a training run's checkpoint on its dev/test files"),
    "export": ("emopillars_jax.export:run_export",
               "export a checkpoint to a Hugging Face folder (+ PyTorch parity check)"),
    "publish": ("emopillars_jax.hub:run_publish",
                "upload an exported model or dataset to the Hugging Face Hub"),
    "predict": ("emopillars_jax.predict:run_predict",
                "predict emotions for texts or (context, utterance) pairs"),
    "demo": ("emopillars_jax.demo:run_cli",
             "run the whole method end to end on the offline defaults"),
    "benchmark": ("emopillars_jax.benchmarks.commands:run_benchmark_cli",
                  "fine-tune on a benchmark from a student and as a baseline; compare"),
    "transfer": ("emopillars_jax.benchmarks.transfer:run_cli",
                 "(b) from an Emo Pillars student vs the plain encoder: learning curve, "
                 "ISEAR, EmoContext"),
    "data": ("emopillars_jax.benchmarks.commands:run_data",
             "download GoEmotions (verified) or the paper's released data; prepare "
             "benchmarks as JSON Lines"),
    "assets": ("emopillars_jax.cli:run_assets", "list and verify the offline model assets"),
}
NOT_BUILT_ISSUE: dict[str, int] = {}   # command -> issue tracking it, while unbuilt


def _config_args(p: argparse.ArgumentParser, default: str, example: str) -> None:
    p.add_argument("--config", "-c", help=f"YAML config file (default {default})")
    p.set_defaults(default_config=default)
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help=f"config overrides, e.g. {example}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emopillars",
        description="Emo Pillars: LLM-distilled fine-grained emotion classifiers "
                    "(llama.cpp synthesis, JAX/Flax training, Hugging Face export).")
    parser.add_argument("--version", action="version", version=f"emopillars {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = {name: sub.add_parser(name, help=help_, description=help_)
         for name, (_, help_) in COMMANDS.items()}

    _config_args(p["generate"], "configs/generate_demo.yaml", "corpus.max_plots=3")
    p["generate"].add_argument("--shard", type=int, default=0, help="this shard's index")
    p["generate"].add_argument("--num-shards", type=int, default=1,
                               help="number of shards plots are split into")

    p["stats"].add_argument("run_dir", help="generation output folder")
    p["stats"].add_argument("--out", help="report folder (default: RUN_DIR/stats)")

    _config_args(p["teacher-eval"], "configs/generate_demo.yaml",
                 "answer_mode=free llm.model=PATH")
    p["teacher-eval"].add_argument("--references", help="JSON Lines {utterance, labels: [ids]} "
                                   "(default data/emopillars/validation.jsonl)")
    p["teacher-eval"].add_argument("--n", type=int, default=500,
                                   help="score the first N references (default 500)")
    p["teacher-eval"].add_argument("--out", help="output folder (default "
                                   "runs/teacher_eval/MODEL-MODE-nN); a rerun resumes it")
    p["teacher-eval"].add_argument("--character", help="the speaker's name in the labels "
                                   "prompt (references have none; default Someone)")

    _config_args(p["train"], "configs/train_demo.yaml", "optim.lr=3e-5")
    _config_args(p["evaluate"], "configs/train_demo.yaml", "eval.checkpoint=latest")

    p["export"].add_argument("checkpoint", help="a training run folder or its checkpoints/ (Orbax)")
    p["export"].add_argument("out", help="output Hugging Face folder")
    p["export"].add_argument("--verify", action="store_true",
                             help="load with transformers + PyTorch and compare logits")
    p["export"].add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])

    p["publish"].add_argument("folder", help="exported model folder or dataset folder")
    p["publish"].add_argument("--repo-id", required=True, help="user/name on the Hub")
    p["publish"].add_argument("--repo-type", default="model", choices=["model", "dataset"])
    p["publish"].add_argument("--private", action="store_true")
    p["publish"].add_argument("--dry-run", action="store_true", help="list what would be uploaded")

    p["predict"].add_argument("model", help="exported Hugging Face folder or checkpoint folder")
    p["predict"].add_argument("--text", action="append", help="a text (repeatable)")
    p["predict"].add_argument("--context", help="context for a contextual model (with --text)")
    p["predict"].add_argument("--file", help="JSON Lines or CSV file with text/context columns")
    p["predict"].add_argument("--out", help="write predictions as JSON Lines here")
    p["predict"].add_argument("--threshold", type=float, help="override the model's threshold")
    p["predict"].add_argument("--quantize", choices=("none", "int8"), default="none",
                              help="int8: dynamic int8 quantization of the encoder layers "
                                   "(about 2.5x faster on CPU; probabilities move slightly)")

    _config_args(p["demo"], "configs/demo.yaml", "generate.corpus.max_plots=3")
    p["demo"].add_argument("--fresh", action="store_true", help="start over instead of resuming")

    _config_args(p["transfer"], "configs/transfer.yaml", "student=runs/.../export/minilm")

    from .benchmarks.commands import add_benchmark_args
    add_benchmark_args(p["benchmark"])

    p["data"].add_argument("action", choices=["download", "prepare"],
                           help="download: fetch and verify the official GoEmotions files, "
                                "or (emopillars) the paper's release from the Hugging Face "
                                "Hub; prepare: a benchmark's files -> JSON Lines for training")
    p["data"].add_argument("dataset", choices=["goemotions", "emopillars", "isear",
                                               "emocontext", "meld", "iemocap"])
    p["data"].add_argument("--out", help="download: default data/DATASET; prepare: "
                                         "default runs/benchmarks/DATASET/data")
    p["data"].add_argument("--source", help="prepare: the benchmark's files (default "
                                            "data/DATASET; goemotions also tfds[:DATA_DIR])")
    p["data"].add_argument("--label-space", default="taxonomy", choices=["taxonomy", "native"],
                           help="taxonomy: map into the 28-class head; native: its own classes")
    p["data"].add_argument("--folds", type=int, help="prepare: cross-validation folds")
    p["data"].add_argument("--base-url", help="download: a mirror of the GoEmotions data folder")
    p["data"].add_argument("--revision", help="download emopillars: a branch, tag or commit of "
                                              "the Hub repo (default main)")
    p["data"].add_argument("--endpoint", help="download emopillars: another Hub endpoint "
                                              "(default HF_ENDPOINT or huggingface.co)")

    p["assets"].add_argument("action", nargs="?", default="list", choices=["list", "path"])
    p["assets"].add_argument("name", nargs="?", help="asset name (for `path`)")
    return parser


def run_assets(args: argparse.Namespace) -> int:
    from . import assets
    if args.action == "path":
        if not args.name:
            raise EmoPillarsError("assets path: give an asset name or a local path")
        print(assets.resolve(args.name))
        return 0
    ok = True
    for name, status, description in assets.asset_status():
        ok &= status.startswith("ok")
        print(f"{name:14s} {description}\n{'':14s} {status}")
    return 0 if ok else 1


def dispatch(args: argparse.Namespace) -> int:
    target, _ = COMMANDS[args.command]
    if target is None:
        issue = NOT_BUILT_ISSUE.get(args.command)
        raise NotBuiltError(f"`emopillars {args.command}` is not built yet"
                            + (f" (tracked in issue #{issue})" if issue else ""))
    if getattr(args, "default_config", None) and args.config is None:
        if not Path(args.default_config).is_file():
            raise ConfigError(f"{args.default_config} (the default config) not found: run from "
                              "the project folder or pass -c CONFIG")
        args.config = args.default_config
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(args) or 0)


def use_compilation_cache() -> None:
    """Keep XLA's compiled programs on disk (JAX's persistent compilation cache), so the
    folds of a cross-validation, a resumed run and a re-run compile nothing again (1-2 min
    per ISEAR fold on 2 CPU cores). Default ~/.cache/emopillars/xla; JAX's own
    JAX_COMPILATION_CACHE_DIR moves it, and set empty turns it off."""
    if "jax" in sys.modules:   # JAX read its settings already (an in-process caller)
        return
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(base) / "emopillars" / "xla"))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # overrides may follow options too (`train -c X optim.lr=1e-5`, `benchmark isear
    # --source D epochs=2`); argparse alone would stop collecting them at the first option
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # Orbax narrates every save and restore step at INFO through absl; JAX reports each
        # accelerator backend it did not find; huggingface_hub's HTTP client every request
        for name in ("absl", "jax._src.xla_bridge", "httpx2", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)
    use_compilation_cache()
    try:
        return dispatch(args)
    except NotBuiltError as exc:
        print(f"emopillars: {exc}", file=sys.stderr)
        return 2
    except EmoPillarsError as exc:
        print(f"emopillars {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:   # e.g. an output path that is a file where a folder must go
        if args.verbose or not exc.filename:
            raise
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        print(f"emopillars {args.command}: error: {where}: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"emopillars {args.command}: interrupted; finished work is saved, "
              "re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
