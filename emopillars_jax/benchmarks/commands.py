"""`emopillars data download|prepare ...` and `python -m emopillars_jax.benchmarks run ...`."""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import EmoPillarsError, NotBuiltError
from . import NAMES


def run_data(args: argparse.Namespace) -> int:
    """CLI entry of `emopillars data download|prepare DATASET`."""
    if args.action == "download":
        if args.dataset != "goemotions":
            raise EmoPillarsError(f"{args.dataset} cannot be downloaded by emopillars (its "
                                  "licence or host needs a manual download); only goemotions")
        from .download import download_goemotions
        download_goemotions(args.out or "data/goemotions", base_url=args.base_url)
        return 0
    from .runner import default_source, prepare
    runs = prepare(args.dataset, args.source or default_source(args.dataset),
                   args.out or f"runs/benchmarks/{args.dataset}/data",
                   label_space=args.label_space, folds=args.folds)
    for run in runs:
        print(f"{run.name}: train {run.train}  dev {run.dev}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emopillars_jax.benchmarks",
        description="The paper's downstream protocol: fine-tune from the synthetic-data "
                    "student (--init-from) and the plain encoder (baseline); compare.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="prepare, train both variants, score, compare")
    run.add_argument("benchmark", choices=NAMES)
    run.add_argument("--init-from", help="exported HF folder of the student trained on the "
                                         "synthetic data (step a); omit for the baseline only")
    run.add_argument("--no-baseline", action="store_true", help="skip the baseline run")
    run.add_argument("--config", "-c", help="default: configs/finetune_BENCHMARK.yaml")
    run.add_argument("--source", help="the benchmark's files (default: data/BENCHMARK); "
                                      "goemotions also `tfds` or `tfds:DATA_DIR`")
    run.add_argument("--out", help="results folder (default: the config's out_dir)")
    run.add_argument("--folds", type=int, help="cross-validation folds (ISEAR default 5)")
    run.add_argument("overrides", nargs="*", metavar="key.sub=value")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .runner import run_benchmark
    try:
        run_benchmark(args.benchmark, args.init_from, config=args.config,
                      overrides=args.overrides, source=args.source, out_dir=args.out,
                      baseline=not args.no_baseline, folds=args.folds)
    except NotBuiltError as exc:
        print(f"emopillars benchmarks: {exc}", file=sys.stderr)
        return 2
    except EmoPillarsError as exc:
        print(f"emopillars benchmarks: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("emopillars benchmarks: interrupted; finished runs are saved, re-run the same "
              "command to resume", file=sys.stderr)
        return 130
    return 0
