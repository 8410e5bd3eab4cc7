#!/usr/bin/env python
"""What the offline teacher costs: one student recipe, N examples from each teacher.

    python scripts/teacher_cost.py --generated runs/gen --release ../shared/data/emopillars \
        --goemotions-dev ../shared/data/goemotions/dev.tsv --out runs/teacher_cost

Trains the recipe of configs/train_emopillars_minilm.yaml (MiniLM-L6) on
- every context-less example `emopillars generate` wrote under GENERATED (all its splits:
  N examples labelled by the offline teacher), and
- N rows drawn at random from the paper's released training split (Mistral-7B's labels;
  one draw per seed),
for the same number of steps (max(the recipe's epochs, --min-steps), as `emopillars
transfer` budgets small sets), and scores each student on the release's validation split
(threshold swept there) and zero-shot on GoEmotions dev at that threshold. Seeds vary the
training (and the draw of the released rows); the generated set is the same in every seed.
Runs resume (each is an `emopillars train` folder; a finished one is read, not rerun). Writes OUT/teacher_cost.{md,json,png}.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emopillars_jax.benchmarks.transfer import budget_overrides  # noqa: E402
from emopillars_jax.config import load_config  # noqa: E402
from emopillars_jax.errors import EmoPillarsError  # noqa: E402
from emopillars_jax.evaluation import every_label_macro_f1  # noqa: E402
from emopillars_jax.taxonomy import LABELS, NUM_LABELS  # noqa: E402
from emopillars_jax.train_config import TrainConfig  # noqa: E402

SOURCES = ("generated", "released")


def generated_rows(folder: Path) -> list[str]:
    files = [folder / "dataset" / "contextless" / f"{s}.jsonl"
             for s in ("train", "validation", "test")]
    if not files[0].is_file():
        raise EmoPillarsError(f"--generated {folder}: no dataset/contextless/train.jsonl "
                              "(an `emopillars generate` out_dir was expected)")
    return [line for f in files if f.is_file() for line in f.read_text().splitlines()
            if line.strip()]


def label_summary(rows: list[str]) -> dict:
    """Labels per example and the most frequent label's share of the examples."""
    counts = [0] * NUM_LABELS
    n_labels = 0
    for line in rows:
        labels = json.loads(line)["labels"]
        n_labels += len(labels)
        for i in labels:
            counts[i] += 1
    top = max(range(NUM_LABELS), key=counts.__getitem__)
    return {"labels_per_example": n_labels / len(rows), "top_label": LABELS[top],
            "top_label_share": counts[top] / len(rows)}


def every_label_score(path: str, cfg: TrainConfig) -> float:
    from emopillars_jax.training import read_split
    return every_label_macro_f1(read_split(cfg, path).targets >= 0.5)


def mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generated", required=True, type=Path, help="`emopillars generate` out_dir")
    p.add_argument("--release", required=True, type=Path,
                   help="folder with the release's train.jsonl and validation.jsonl")
    p.add_argument("--goemotions-dev", required=True, help="GoEmotions dev.tsv (zero-shot)")
    p.add_argument("--config", default="configs/train_emopillars_minilm.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--min-steps", type=int, default=600)
    p.add_argument("--out", type=Path, default=Path("runs/teacher_cost"))
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    args = p.parse_args()
    from emopillars_jax import training

    gen = generated_rows(args.generated)
    released = [line for line in (args.release / "train.jsonl").read_text().splitlines()
                if line.strip()]
    n = len(gen)
    if n > len(released):
        raise EmoPillarsError(f"--generated: {n} examples, more than the release's "
                              f"{len(released)} training rows")
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    recipe = load_config(TrainConfig, args.config, args.overrides)
    budget = budget_overrides(n, recipe.epochs, recipe.batch_size, args.min_steps)
    # dev (the release's validation) once, at the end: nothing is chosen by it but the threshold
    budget.append(f"eval.every_steps={budget[0].split('=')[1]}")
    val = str(args.release / "validation.jsonl")
    results: dict = {"n_train": n, "budget": budget, "config": args.config,
                     "overrides": args.overrides, "seeds": args.seeds}
    results["runs"] = {source: [] for source in SOURCES}
    for seed in args.seeds:   # seed by seed, so an interrupted comparison is still paired
        for source in SOURCES:
            rows = gen if source == "generated" else random.Random(seed).sample(released, n)
            path = data / (f"generated_n{n}.jsonl" if source == "generated"
                           else f"released_n{n}_seed{seed}.jsonl")
            path.write_text("\n".join(rows) + "\n")
            out = args.out / f"{source}_seed{seed}"
            cfg = load_config(TrainConfig, args.config, [
                *args.overrides, *budget, f"seed={seed}", f"out_dir={out}",
                f"data.train={path}", f"data.dev={val}", f"data.test={args.goemotions_dev}"])
            print(f"teacher_cost: {source} seed {seed}: {n} examples -> {out}", flush=True)
            summary = out / "summary.json"
            if not (summary.is_file() and json.loads(summary.read_text())["status"] == "finished"):
                training.train(cfg)
            report = json.loads((out / "eval" / "eval.json").read_text())
            results["runs"][source].append({
                "seed": seed, **label_summary(rows),
                "validation_macro_f1": report["dev"]["macro_f1"],
                "validation_examples": report["dev"]["examples"],
                "threshold": report["dev"]["thresholds"]["global"],
                "goemotions_macro_f1": report["test"]["macro_f1"],
                "goemotions_examples": report["test"]["examples"]})
    results["every_label"] = {"validation": every_label_score(val, recipe),
                              "goemotions": every_label_score(args.goemotions_dev, recipe)}
    for source, runs in results["runs"].items():
        results[source] = {k: mean_sd([r[k] for r in runs])
                           for k in ("validation_macro_f1", "goemotions_macro_f1")}
    results["gap"] = {k: mean_sd([r[k] - g[k] for r, g in zip(results["runs"]["released"],
                                                              results["runs"]["generated"])])
                      for k in ("validation_macro_f1", "goemotions_macro_f1")}
    (args.out / "teacher_cost.json").write_text(json.dumps(results, indent=1))
    (args.out / "teacher_cost.md").write_text(markdown(results))
    plot(results, args.out / "teacher_cost.png")
    print(markdown(results))
    return 0


def _pm(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def markdown(r: dict) -> str:
    first = r["runs"]["generated"][0]
    lines = [f"# What the offline teacher costs: {r['n_train']:,} training examples each", "",
             f"Recipe {r['config']} {' '.join(r['overrides'])}, {r['budget'][0]}; mean ± sd "
             f"over seeds {r['seeds']} (training seed; for the released rows also the draw). "
             f"Emo Pillars validation: {first['validation_examples']:,} examples, one global "
             f"threshold swept on it; GoEmotions dev: {first['goemotions_examples']:,} "
             "examples, zero-shot, at that threshold. The label columns describe the "
             "training set (the released rows: seed 0's draw).", "",
             "| training data | labels / example | most frequent label (share) | "
             "EP validation macro-F1 | GoEmotions dev macro-F1 |", "|---|---|---|---|---|"]
    for source, name in (("generated", "generated by the offline teacher"),
                         ("released", "released (Mistral-7B's labels)")):
        run = r["runs"][source][0]
        lines.append(f"| {name} | {run['labels_per_example']:.2f} | {run['top_label']} "
                     f"({run['top_label_share']:.0%}) | {_pm(r[source]['validation_macro_f1'])}"
                     f" | {_pm(r[source]['goemotions_macro_f1'])} |")
    lines += [f"| every label predicted (reference) | | | {r['every_label']['validation']:.3f}"
              f" | {r['every_label']['goemotions']:.3f} |",
              f"| **released - generated** (paired by seed) | | | "
              f"**{_pm(r['gap']['validation_macro_f1'])}** | "
              f"**{_pm(r['gap']['goemotions_macro_f1'])}** |"]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    keys = (("validation_macro_f1", "validation"), ("goemotions_macro_f1", "goemotions"))
    xs = range(len(keys))
    for i, (source, label) in enumerate((("generated", "offline teacher's data"),
                                         ("released", "released data"))):
        ax.bar([x + (i - 0.5) * 0.35 for x in xs], [r[source][k]["mean"] for k, _ in keys],
               0.35, yerr=[r[source][k]["sd"] for k, _ in keys], capsize=4, label=label)
    for x, (_, ref) in zip(xs, keys):
        ax.hlines(r["every_label"][ref], x - 0.4, x + 0.4, colors="grey", linestyles="--",
                  label="every label predicted" if x == 0 else None)
    ax.set_xticks(list(xs), ["Emo Pillars validation", "GoEmotions dev (zero-shot)"])
    ax.set_ylabel("macro-F1")
    ax.set_title(f"{r['n_train']:,} training examples each (mean ± sd, seeds {r['seeds']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EmoPillarsError as exc:
        sys.exit(f"teacher_cost: {exc}")
