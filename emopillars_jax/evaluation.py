"""Multi-label metrics, decision thresholds and evaluation reports (numpy + matplotlib).

Macro-F1 averages the classes that have at least one gold example in the evaluated set (a
class absent from a small dev set would otherwise count as 0); micro-F1 pools all decisions;
weighted-F1 weights classes by gold support. Thresholds are chosen on dev only - one global
value swept 0.05..0.95, or optionally one per class - and applied unchanged to test.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .taxonomy import LABELS

SWEEP = np.round(np.arange(0.05, 0.951, 0.05), 2)


def _safe_div(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def predict(probs: np.ndarray, thresholds) -> np.ndarray:
    """Boolean predictions: probs >= threshold (a scalar or one value per class)."""
    return np.asarray(probs) >= np.asarray(thresholds)


def metrics(gold: np.ndarray, pred: np.ndarray, names: Sequence[str] | None = None) -> dict:
    """F1 family from boolean [N, C] gold and predictions."""
    gold, pred = np.asarray(gold, bool), np.asarray(pred, bool)
    tp = (gold & pred).sum(0)
    fp = (~gold & pred).sum(0)
    fn = (gold & ~pred).sum(0)
    support = gold.sum(0)
    precision, recall = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    present = support > 0
    names = list(names or LABELS[:gold.shape[1]])
    return {
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "micro_f1": float(_safe_div(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum())),
        "weighted_f1": float(_safe_div((f1 * support).sum(), support.sum())),
        "examples": int(gold.shape[0]),
        "per_class": {names[c]: {"precision": float(precision[c]), "recall": float(recall[c]),
                                 "f1": float(f1[c]), "support": int(support[c])}
                      for c in range(gold.shape[1])},
    }


def sweep_global(gold: np.ndarray, probs: np.ndarray, grid=SWEEP) -> tuple[float, float]:
    """The global threshold maximising macro-F1, and its score.

    Ties are broken by micro-F1, which also counts false positives in classes absent from
    dev (macro-F1 ignores them: on a small dev set with one class every threshold would
    tie and the lowest would predict every label), then by the lowest threshold."""
    scores = [(m["macro_f1"], m["micro_f1"])
              for m in (metrics(gold, predict(probs, t)) for t in grid)]
    best = max(range(len(grid)), key=lambda i: (scores[i], -i))
    return float(grid[best]), float(scores[best][0])


def sweep_per_class(gold: np.ndarray, probs: np.ndarray, default: float,
                    grid=SWEEP) -> np.ndarray:
    """Per class, the threshold maximising that class's F1; classes without gold examples
    in dev keep `default` (nothing to tune on)."""
    gold = np.asarray(gold, bool)
    out = np.full(gold.shape[1], default, np.float64)
    for c in range(gold.shape[1]):
        if not gold[:, c].any():
            continue
        f1s = [metrics(gold[:, c:c + 1], probs[:, c:c + 1] >= t, ["c"])["per_class"]["c"]["f1"]
               for t in grid]
        out[c] = grid[int(np.argmax(f1s))]
    return out


def choose_thresholds(gold: np.ndarray, probs: np.ndarray, *, default: float = 0.5,
                      sweep: bool = True, per_class: bool = False) -> dict:
    """Thresholds from dev: {"global": t, "per_class": [..] or None}."""
    t = sweep_global(gold, probs)[0] if sweep else default
    pc = sweep_per_class(gold, probs, t).tolist() if per_class else None
    return {"global": t, "per_class": pc}


def thresholds_array(thresholds: dict) -> np.ndarray | float:
    return np.asarray(thresholds["per_class"]) if thresholds.get("per_class") else \
        float(thresholds["global"])


def labels_per_example(predicted: np.ndarray) -> float:
    """Mean number of classes predicted per example (all of them: the every-label answer)."""
    predicted = np.asarray(predicted)
    return round(float(predicted.sum(1).mean()), 2) if len(predicted) else 0.0


def every_label_macro_f1(gold: np.ndarray) -> float:
    """The trivial reference: every class predicted for every example."""
    return metrics(gold, np.ones_like(gold, dtype=bool))["macro_f1"]


def threshold_scores(gold: np.ndarray, probs: np.ndarray, own_threshold) -> dict:
    """Macro-F1 of `probs` at a threshold chosen elsewhere (one, or one per class), and at
    the best global threshold swept on this very set (optimistic: chosen on the scored
    examples)."""
    swept, swept_f1 = sweep_global(gold, probs)
    predicted = predict(probs, own_threshold)
    own = metrics(gold, predicted)
    return {"examples": int(len(gold)), "own_threshold": np.asarray(own_threshold).tolist(),
            "macro_f1": own["macro_f1"], "micro_f1": own["micro_f1"],
            "labels_per_example": labels_per_example(predicted),
            "swept_threshold": swept, "macro_f1_swept": swept_f1,
            "every_label_macro_f1": every_label_macro_f1(gold)}


def evaluate_split(targets: np.ndarray, probs: np.ndarray, thresholds: dict,
                   names: Sequence[str] | None = None) -> dict:
    """Metrics of one split; gold = targets >= 0.5 (soft targets are binarised here).
    With them, the every-label reference a score must beat to mean anything, and how many
    labels the model puts on an example (all of them is that reference's answer)."""
    gold = np.asarray(targets) >= 0.5
    predicted = predict(probs, thresholds_array(thresholds))
    out = metrics(gold, predicted, names)
    out["labels_per_example"] = labels_per_example(predicted)
    out["every_label_macro_f1"] = every_label_macro_f1(gold)
    out["thresholds"] = thresholds
    return out


# ----------------------------------------------------------------------------- reports

def markdown_report(results: dict[str, dict], title: str = "Evaluation") -> str:
    lines = [f"# {title}", ""]
    splits = list(results)
    thr = next(iter(results.values()))["thresholds"]
    per = " (per-class thresholds on)" if thr.get("per_class") else ""
    lines += [f"Global threshold (chosen on dev): {thr['global']:.2f}{per}", "",
              "| split | examples | macro-F1 | micro-F1 | weighted-F1 | labels/example "
              "| macro-F1 of every label |", "|---|---|---|---|---|---|---|"]
    for split, m in results.items():
        lines.append(f"| {split} | {m['examples']} | {m['macro_f1']:.4f} | {m['micro_f1']:.4f} "
                     f"| {m['weighted_f1']:.4f} | {m['labels_per_example']:.2f} "
                     f"| {m['every_label_macro_f1']:.4f} |")
    lines += ["", "The last column is the trivial reference: every class predicted for every "
              "example. A macro-F1 near it has not learned to tell the classes apart."]
    lines += ["", "## Per class", "",
              "| class | " + " | ".join(f"{s} P | {s} R | {s} F1 | {s} n" for s in splits) + " |",
              "|---|" + "---|---|---|---|" * len(splits)]
    for name in next(iter(results.values()))["per_class"]:
        cells = []
        for s in splits:
            c = results[s]["per_class"][name]
            cells += [f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}",
                      str(c["support"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_per_class(results: dict[str, dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(next(iter(results.values()))["per_class"])
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(names)), 4.5))
    width = 0.8 / len(results)
    x = np.arange(len(names))
    for i, (split, m) in enumerate(results.items()):
        ax.bar(x + i * width, [m["per_class"][n]["f1"] for n in names], width,
               label=f"{split} (macro {m['macro_f1']:.3f})")
    ax.set_xticks(x + width * (len(results) - 1) / 2, names, rotation=60, ha="right")
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1)
    ax.set_title("Per-class F1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(history: list[dict], path: Path) -> None:
    """Training loss and dev macro-F1 against steps (from history.jsonl records)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    train = [h for h in history if "loss" in h]
    dev = [h for h in history if "dev_macro_f1" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot([h["step"] for h in train], [h["loss"] for h in train], label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if dev:
        ax2 = ax.twinx()
        ax2.plot([h["step"] for h in dev], [h["dev_macro_f1"] for h in dev], "o-",
                 color="tab:orange", label="dev macro-F1")
        ax2.set_ylabel("dev macro-F1")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title("Training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: str | Path, results: dict[str, dict], history: list[dict] | None = None,
                 title: str = "Evaluation") -> dict[str, Path]:
    """eval.json, eval.md, per_class_f1.png (+ training_curves.png) in out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "eval.json", "markdown": out_dir / "eval.md",
             "per_class_png": out_dir / "per_class_f1.png"}
    paths["json"].write_text(json.dumps(results, indent=2))
    paths["markdown"].write_text(markdown_report(results, title))
    plot_per_class(results, paths["per_class_png"])
    if history:
        paths["curves_png"] = out_dir / "training_curves.png"
        plot_history(history, paths["curves_png"])
    return paths
