"""The demo's closing summary: what each score is computed on, what the teacher's labels look
like, and what each student answers to the same sentences."""
from __future__ import annotations

import json
from pathlib import Path

from .taxonomy import LABELS

FEW = 100            # scores from fewer examples are flagged as rough indications
DOMINANT = 0.5       # a label on more than this share of examples is called out
TRIVIAL_MARGIN = 0.01   # macro-F1 within this of "every label predicted" is called out


def teacher_labels(stats_dir: str | Path) -> dict | None:
    """Label shares of the generated context-less examples, from the stats report."""
    path = Path(stats_dir) / "report.json"
    if not path.is_file():
        return None
    cl = json.loads(path.read_text()).get("contextless", {})
    n = cl.get("examples", 0)
    if not n:
        return {"examples": 0, "shares": {}}
    counts = sorted(cl["label_counts"].items(), key=lambda kv: -kv[1])
    return {"examples": n, "mean_labels": cl.get("mean_labels_per_example"),
            "shares": {name: c / n for name, c in counts if c}}


def _n(count: int) -> str:
    return f"{count:,} example{'s' * (count != 1)}"


def _few(count: int) -> str:
    return f"  [only {_n(count)}: a rough indication]" if count < FEW else ""


def _every_label(labels_per_example: float | None) -> bool:
    """All (or all but a fraction of one) classes on the average example."""
    return labels_per_example is not None and labels_per_example >= len(LABELS) - 0.5


def _trivial(m: dict) -> str | None:
    """Why a score says nothing about what the model learned, or None."""
    if _every_label(m.get("labels_per_example")):
        return (f"it puts all {len(LABELS)} labels on the examples: this is the every-label "
                "answer, not a learned one")
    every = m.get("every_label_macro_f1")
    if every is not None and m["macro_f1"] <= every + TRIVIAL_MARGIN:
        return "it is no better than predicting every label: it has not learned to tell the " \
               "emotions apart"
    return None


def _reference(m: dict) -> str:
    if m.get("every_label_macro_f1") is None:
        return ""
    return (f"; every label would score {m['every_label_macro_f1']:.3f}; "
            f"{m['labels_per_example']:.1f} labels each")


def _labels(labels: list[str], show: int = 6) -> str:
    if not labels:
        return "-"
    if len(labels) == len(LABELS):
        return f"every label (all {len(LABELS)})"
    if len(labels) <= show:
        return str(labels)
    return f"{len(labels)} labels ({', '.join(labels[:show])}, ...)"


def _thr(threshold) -> str:
    return f"{threshold:.2f}" if isinstance(threshold, float) else "one per class"


def teacher_lines(labels: dict | None) -> list[str]:
    if not labels or not labels["examples"]:
        return ["teacher labels: no context-less examples were generated"]
    n = labels["examples"]
    top = list(labels["shares"].items())
    lines = [f"teacher labels ({_n(n)}, context-less, {labels['mean_labels']} labels each on "
             "average): " + ", ".join(f"{k} {v:.0%}" for k, v in top[:8])
             + (f", ... ({len(top)} classes used)" if len(top) > 8 else "")]
    dominant = [(k, v) for k, v in top if v > DOMINANT]
    if dominant:
        names = ", ".join(f"'{k}' on {v:.0%}" for k, v in dominant)
        lines.append(f"  WARNING: {names} of the examples: the teacher's labels barely depend "
                     "on the text, so its students can learn little beyond this label prior.")
    return lines


def print_summary(s: dict) -> None:
    print("\n=== Emo Pillars demo: summary ===")
    print(f"dataset      {s['dataset']}")
    for name, c in s["dataset_counts"].items():
        print(f"  {name:12s} " + "  ".join(f"{k}={v}" for k, v in c.items()))
    print(f"stats        {s['stats']}/report.md (+ PNG plots)")
    for line in teacher_lines(teacher_labels(s["stats"])):
        print(line)
    print("students trained on the generated data, scored on the generated held-out plots "
          "(threshold chosen on the validation plot):")
    for mode, st in s["students"].items():
        print(f"  {mode:12s} checkpoints {st['checkpoints']}; report {st['report']}")
        if not st["metrics"]:
            print("    not scored: the generated data has no validation/test plot")
        for split, m in st["metrics"].items():
            how = "chosen on these same examples" if split == "dev" else "from the dev plot"
            print(f"    {split:5s} macro-F1 {m['macro_f1']:.3f} on {_n(m['examples'])} "
                  f"(threshold {m['threshold']:.2f}, {how}){_reference(m)}{_few(m['examples'])}")
            if why := _trivial(m):
                print(f"          WARNING: {why}.")
    for mode, ex in s["exported"].items():
        print(f"exported {mode:11s} {ex['folder']} (logits verified against PyTorch)")
    release = s.get("release_student")
    if release:
        dev = release["metrics"].get("dev", {})
        print(f"student on the released data: {_n(release['train_examples'])}, "
              f"{release['step']} steps; Emo Pillars validation macro-F1 "
              f"{dev.get('macro_f1', float('nan')):.3f} on {_n(dev.get('examples', 0))} "
              f"(threshold {dev.get('threshold', float('nan')):.2f} chosen on them); "
              f"exported to {release['folder']} (verified){_few(dev.get('examples', 0))}")
    else:
        print("no released Emo Pillars data given: to see what a student learns from the "
              "paper's own teacher (Mistral-7B), get the release (`emopillars data download "
              "emopillars`, or the copy in ../shared/data/emopillars) and run `make demo "
              "DEMO_ARGS=emopillars=FOLDER`.")
    scores = s.get("held_out_scores") or {}
    if scores:
        print("context-less students on real held-out data: macro-F1 at each student's own "
              "threshold [and at the best threshold swept on the set itself: optimistic]")
        for student, per_set in scores.items():
            cells = [f"{name} ({_n(m['examples'])}): {m['macro_f1']:.3f} at "
                     f"{_thr(m['own_threshold'])}, {m['labels_per_example']:.1f} labels each "
                     f"[{m['macro_f1_swept']:.3f} at {m['swept_threshold']:.2f}]"
                     f"{_few(m['examples'])}" for name, m in per_set.items()]
            print(f"  trained on {student:15s} " + "; ".join(cells))
        for name, m in next(iter(scores.values())).items():
            print(f"  for comparison, predicting every label for every example: "
                  f"{m['every_label_macro_f1']:.3f} on {name}")
        for student, per_set in scores.items():
            for name, m in per_set.items():
                if why := _trivial(m):
                    print(f"  WARNING: the student trained on {student}, on {name}: {why}.")
    if s["goemotions"]:
        m = s["goemotions"]["metrics"].get("dev", {})
        print(f"GoEmotions fine-tune of the generated-data student: dev macro-F1 "
              f"{m.get('macro_f1', float('nan')):.3f} on {_n(m.get('examples', 0))} "
              f"(threshold chosen on them){_few(m.get('examples', 0))}")
    print("predictions (labels at each model's threshold; top 3 probabilities):")
    by_text: dict[tuple, list[dict]] = {}
    for row in s["predictions"]:
        by_text.setdefault((row["context"], row["text"]), []).append(row)
    for (context, text), rows in by_text.items():
        ctx = f"[{context[:50]}...] " if context else ""
        print(f"  {ctx}{text!r}")
        for row in rows:
            print(f"      {row['model']:14s} -> {_labels(row['labels'])}  top3 {row['top3']}")
    by_model: dict[str, list[dict]] = {}
    for row in s["predictions"]:
        by_model.setdefault(row["model"], []).append(row)
    for model, rows in by_model.items():
        if all(len(row["labels"]) == len(LABELS) for row in rows):
            print(f"  WARNING: '{model}' puts every label on every sentence above: at its "
                  "threshold it does not tell the emotions apart (its top-3 probabilities "
                  "show what it leans to).")
    print("phase times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s["phase_seconds"].items()))
    print(f"peak memory {s['peak_memory_gb']:.2f} GB; this run {s['wall_seconds_this_run']:.0f} s")
