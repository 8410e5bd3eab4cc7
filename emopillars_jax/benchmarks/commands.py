"""`emopillars data download|prepare ...` and `emopillars benchmark NAME ...`."""
from __future__ import annotations

import argparse
import sys

from ..errors import EmoPillarsError
from . import NAMES


def run_data(args: argparse.Namespace) -> int:
    """CLI entry of `emopillars data download|prepare DATASET`."""
    if args.dataset == "emopillars":
        if args.action != "download":
            raise EmoPillarsError("the released data needs no preparation: train on its JSON "
                                  "Lines files (data.train=data/emopillars/...)")
        from ..release import DEFAULT_OUT, download_release
        download_release(args.out or DEFAULT_OUT, revision=args.revision,
                         endpoint=args.endpoint)
        return 0
    if args.action == "download":
        if args.dataset != "goemotions":
            raise EmoPillarsError(f"{args.dataset} cannot be downloaded by emopillars (its "
                                  "licence or host needs a manual download); only goemotions "
                                  "and emopillars")
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


def add_benchmark_args(run: argparse.ArgumentParser) -> None:
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


def run_benchmark_cli(args: argparse.Namespace) -> int:
    """CLI entry of `emopillars benchmark NAME ...` (errors are reported by the CLI)."""
    from .runner import run_benchmark
    run_benchmark(args.benchmark, args.init_from, config=args.config,
                  overrides=args.overrides, source=args.source, out_dir=args.out,
                  baseline=not args.no_baseline, folds=args.folds)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m emopillars_jax.benchmarks run NAME ...`: the same as `emopillars benchmark`."""
    from ..cli import main as cli_main
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        argv = argv[1:]
    return cli_main(["benchmark", *argv])
