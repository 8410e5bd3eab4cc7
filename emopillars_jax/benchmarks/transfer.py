"""`emopillars transfer`: the paper's claim as one command.

(b) fine-tunes a student trained on Emo Pillars data (an exported Hugging Face folder) on a
benchmark; the baseline fine-tunes the plain encoder with the same recipe, the same data and
the same step budget. Both are run through the benchmark runner (runner.run_benchmark), on

- GoEmotions at several training-set sizes (a learning curve): each size and seed draws its
  own random sample of the training file, shared by both variants (paired runs);
- ISEAR (5-fold cross-validation) and EmoContext, with their configs' recipes;

plus the student's zero-shot GoEmotions dev score (no GoEmotions training): once with the
threshold it was given on Emo Pillars validation, once swept on GoEmotions dev itself
(optimistic: chosen on the scored set).

The step budget. With a handful of examples, the recipe's 3 epochs are a few dozen steps:
the baseline's fresh head barely leaves the label prior, and a comparison would show that
rather than the transfer. So runs below the full training set train for
max(the recipe's epochs, `min_steps`) steps, the same for both variants; `min_steps` is
chosen on dev beforehand (README: "The paper's data and its claim"). Dev is scored with the final
checkpoint; nothing is selected on it but the global threshold (swept on dev, as in the
paper). Results: OUT/transfer.{md,json} (mean ± sd over seeds, the paired difference) and
OUT/learning_curve.png.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..config import Section
from ..errors import EmoPillarsError
from . import runner as R

VARIANTS = ("finetuned", "baseline")   # runner.run_benchmark's names: (b) and the baseline


class CurveConfig(Section):
    sizes: list[int | Literal["all"]] = [500, 1000, 4000, "all"]
    min_steps: int = Field(2400, ge=1)   # step budget below "all", chosen on dev (module doc)


class TransferConfig(Section):
    out_dir: str = "runs/transfer"
    student: str | None = None          # exported HF folder of the Emo Pillars student
    benchmarks: list[Literal["goemotions", "isear", "emocontext"]] = [
        "goemotions", "isear", "emocontext"]
    sources: dict[str, str] = {"goemotions": "data/goemotions", "isear": "data/isear",
                               "emocontext": "data/emocontext"}
    seeds: list[int] = Field([0, 1, 2], min_length=1)   # GoEmotions samples up to 4,000
    goemotions: CurveConfig = CurveConfig()
    # extra key=value overrides of configs/finetune_NAME.yaml, the same for both variants
    overrides: dict[str, list[str]] = {}
    zero_shot: bool = True


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def budget_overrides(n_train: int, epochs: float, batch_size: int, min_steps: int) -> list[str]:
    """max(recipe epochs, min_steps) steps; dev is predicted once, at the end."""
    steps = max(math.ceil(epochs * (n_train // batch_size)), min_steps)
    return [f"max_steps={steps}", f"checkpoint.every_steps={steps}"]


def zero_shot(student: str, source: str) -> dict:
    """The student's GoEmotions dev scores without GoEmotions training: at its own threshold
    (chosen on Emo Pillars validation) and at one swept on GoEmotions dev (optimistic)."""
    from .. import data as data_lib
    from ..predict import Predictor
    dev = data_lib.read_examples(Path(source) / "dev.tsv", num_labels=28)
    return Predictor.from_path(student).held_out_scores(dev)


def run_transfer(cfg: TransferConfig, train_fn=None, log=print) -> dict:
    """Every (benchmark, size, seed) pair of runs; resumes finished ones (runner)."""
    from ..config import load_config
    from ..train_config import TrainConfig
    if not cfg.student or not (Path(cfg.student) / "config.json").is_file():
        raise EmoPillarsError(f"student: {cfg.student!r} is not an exported model folder "
                              "(with config.json); train and export one first (README, "
                              "\"The paper's data\")")
    for name in cfg.benchmarks:
        if name not in cfg.sources:
            raise EmoPillarsError(f"sources.{name}: no data folder given for {name}")
    out = Path(cfg.out_dir)
    train_fn = train_fn or R.training_stack_train_fn(dev_during_training=False)
    results: dict = {"student": cfg.student, "curve": [], "benchmarks": {}}

    def run(name, out_dir, overrides, subset=None):
        return R.run_benchmark(name, cfg.student, overrides=overrides, source=cfg.sources[name],
                               out_dir=out_dir, train_fn=train_fn, train_subset=subset,
                               log=log)["variants"]

    for name in cfg.benchmarks:
        extra = list(cfg.overrides.get(name, []))
        if name != "goemotions":
            variants = run(name, out / name, extra)
            results["benchmarks"][name] = _pair_row(name, [variants])
            continue
        recipe = load_config(TrainConfig, Path("configs") / "finetune_goemotions.yaml", extra)
        n_all = len(R.read_split("goemotions", cfg.sources[name], "train", "taxonomy"))
        for size in cfg.goemotions.sizes:
            n = n_all if size == "all" else int(size)
            seeds = cfg.seeds if size != "all" else cfg.seeds[:1]
            per_seed = []
            for seed in seeds:
                folder = out / name / f"n{n}" / f"seed{seed}"
                overrides = [*extra, f"seed={seed}"]
                subset = None
                if size != "all":
                    overrides += budget_overrides(n, recipe.epochs, recipe.batch_size,
                                                  cfg.goemotions.min_steps)
                    subset = (n, seed)
                log(f"transfer: goemotions n={n} seed={seed}")
                per_seed.append(run(name, folder, overrides, subset))
            row = _pair_row(name, per_seed)
            row["n_train"] = n
            results["curve"].append(row)
    if cfg.zero_shot and "goemotions" in cfg.benchmarks:
        results["zero_shot"] = zero_shot(cfg.student, cfg.sources["goemotions"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(results, indent=1))
    (out / "transfer.md").write_text(transfer_markdown(results))
    if results["curve"]:
        plot_learning_curve(results, out / "learning_curve.png")
    log(f"transfer: {out / 'transfer.md'}")
    return results


def _pair_row(name: str, per_seed: list[dict]) -> dict:
    """Headline metric of both variants over seeds (or folds), and their paired difference."""
    row: dict = {"benchmark": name, "seeds": len(per_seed)}
    if len(per_seed) == 1 and per_seed[0]["baseline"].get("folds"):
        # one cross-validated run: the spread is over folds (runner.aggregate)
        for v in VARIANTS:
            res = per_seed[0][v]
            row[v] = {"mean": res["value"], "sd": res.get("value_std", 0.0),
                      "values": None, "metric": res["metric"], "steps": res.get(
                          "checkpoint_step"), "n_dev": res["n_examples"]}
        row["spread_over"] = f"{per_seed[0]['baseline']['folds']} folds"
        row["diff"] = {"mean": row["finetuned"]["mean"] - row["baseline"]["mean"], "sd": None}
        return row
    for v in VARIANTS:
        values = [s[v]["value"] for s in per_seed]
        mean, sd = _mean_sd(values)
        row[v] = {"mean": mean, "sd": sd, "values": values, "metric": per_seed[0][v]["metric"],
                  "steps": per_seed[0][v].get("checkpoint_step"),
                  "n_dev": per_seed[0][v]["n_examples"]}
    diffs = [s["finetuned"]["value"] - s["baseline"]["value"] for s in per_seed]
    mean, sd = _mean_sd(diffs)
    row["diff"] = {"mean": mean, "sd": sd, "values": diffs}
    row["spread_over"] = f"{len(per_seed)} seed{'s' * (len(per_seed) > 1)}"
    # the issue's bar: (b) above the baseline by more than twice the seeds' sd
    if len(per_seed) > 1:
        spread = max(row["finetuned"]["sd"], row["baseline"]["sd"])
        row["clear_gain"] = mean > 2 * spread
    return row


def _thr(threshold) -> str:
    return f"{threshold:.2f}" if isinstance(threshold, float) else "(one per class)"


def _pm(stat: dict) -> str:
    return f"{stat['mean']:.3f}" + (f" ± {stat['sd']:.3f}" if stat.get("sd") else "")


def transfer_markdown(results: dict) -> str:
    lines = [f"# Transfer: (b) from `{results['student']}` vs the baseline", "",
             "Dev splits; one global threshold swept on dev for GoEmotions (multi-label), the "
             "argmax for ISEAR and EmoContext; final checkpoints; ± is the sample standard "
             "deviation over seeds (GoEmotions samples) or the population sd over folds "
             "(ISEAR).", ""]
    if results["curve"]:
        lines += ["## GoEmotions learning curve (dev macro-F1, 28 classes)", "",
                  "| training examples | steps | (b) from the student | baseline | "
                  "(b) - baseline | clear gain (> 2 sd) | runs |", "|---|---|---|---|---|---|---|"]
        for row in results["curve"]:
            gain = {True: "yes", False: "no"}.get(row.get("clear_gain"), "-")
            lines.append(f"| {row['n_train']:,} | {row['baseline']['steps']} | "
                         f"{_pm(row['finetuned'])} | {_pm(row['baseline'])} | "
                         f"{row['diff']['mean']:+.3f}"
                         + (f" ± {row['diff']['sd']:.3f}" if row['diff'].get('sd') else "")
                         + f" | {gain} | {row['spread_over']} |")
        lines.append(f"\nDev examples: {results['curve'][0]['baseline']['n_dev']:,}.")
    if results.get("zero_shot"):
        z = results["zero_shot"]
        lines += ["", "## Zero-shot GoEmotions dev (the student, no GoEmotions training)", "",
                  f"{z['examples']:,} dev examples: macro-F1 {z['macro_f1']:.3f} at the "
                  f"student's threshold {_thr(z['own_threshold'])} (chosen on Emo Pillars "
                  f"validation); {z['macro_f1_swept']:.3f} with the threshold swept on "
                  f"GoEmotions dev itself ({z['swept_threshold']:.2f}; optimistic)."]
    if results["benchmarks"]:
        lines += ["", "## Other benchmarks (dev)", "",
                  "| benchmark | metric | (b) from the student | baseline | (b) - baseline | "
                  "spread over |", "|---|---|---|---|---|---|"]
        for name, row in results["benchmarks"].items():
            lines.append(f"| {name} | {row['baseline']['metric']} | {_pm(row['finetuned'])} | "
                         f"{_pm(row['baseline'])} | {row['diff']['mean']:+.3f} | "
                         f"{row['spread_over']} |")
    return "\n".join(lines) + "\n"


def plot_learning_curve(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = results["curve"]
    xs = [r["n_train"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for variant, label in (("finetuned", "(b) from the Emo Pillars student"),
                           ("baseline", "baseline (encoder fine-tuned directly)")):
        ax.errorbar(xs, [r[variant]["mean"] for r in rows], yerr=[r[variant]["sd"] for r in rows],
                    marker="o", capsize=4, label=label)
    z = results.get("zero_shot")
    if z:
        ax.axhline(z["macro_f1"], ls="--", color="grey",
                   label="student zero-shot (no GoEmotions training)")
    ax.set_xscale("log")
    ax.set_xlabel("GoEmotions training examples")
    ax.set_ylabel(f"dev macro-F1 ({rows[0]['baseline']['n_dev']:,} examples)")
    ax.set_title("GoEmotions learning curve (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_cli(args) -> int:
    from ..config import load_config
    cfg = load_config(TransferConfig, args.config, args.overrides)
    run_transfer(cfg)
    return 0
