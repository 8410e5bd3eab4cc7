#!/usr/bin/env python
"""Label-scoring variants (calibration and label rule) compared on the raw scores that
`emopillars teacher-eval ... labels_method=score` stored, without asking the LLM again.

    python scripts/sweep_label_scoring.py runs/teacher_eval/qwen2.5-0.5b-instruct-q4_k_m-score-project-n500 \
        [more folders] --out runs/teacher_eval/sweep

The prompt and the model need a teacher-eval run each; calibration (none / the run's own
priors / those priors and each class's spread) and the rule that picks labels (top-k, cumulative mass, the relative threshold)
only post-process the 28 log-probabilities per utterance, so they are recomputed here with
the same functions the stage uses (label_scoring.label_record, labels.process_labels,
teacher_eval.score_answers). To keep the choice honest, each variant is also scored on the
two halves of the references separately: pick on the first half, read the second.
`content_free` calibration needs the LLM (its inputs are scored at run time) and is left
to teacher-eval runs. Writes OUT/sweep.md and OUT/sweep.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_gen.config import GenerateConfig  # noqa: E402
from data_gen.label_scoring import label_record, priors_from, scales_from  # noqa: E402
from data_gen.labels import process_labels  # noqa: E402
from data_gen.store import read_jsonl  # noqa: E402
from data_gen.teacher_eval import score_answers  # noqa: E402
from emopillars_jax.errors import EmoPillarsError  # noqa: E402
from emopillars_jax.taxonomy import LABELS, NUM_LABELS  # noqa: E402

# (rule, k, mass, label_threshold)
RULES = [("top_k", k, 0.5, 0.3) for k in (1, 2, 3, 4)] + \
        [("mass", 3, m, 0.3) for m in (0.3, 0.5, 0.7)] + \
        [("relative", 3, 0.5, t) for t in (0.3, 0.5, 0.7)]


def rule_name(rule: str, k: int, mass: float, threshold: float) -> str:
    return {"top_k": f"top-{k}", "mass": f"mass {mass:g}",
            "relative": f"relative >= {threshold:g}"}[rule]


def load_run(folder: Path) -> tuple[GenerateConfig, list[dict], list[list[float]]]:
    manifest = json.loads((folder / "stages" / "manifest.json").read_text())
    cfg = GenerateConfig(**manifest["config"])
    if cfg.labels_method != "score":
        raise EmoPillarsError(f"{folder}: not a labels_method=score run")
    scores = {r["utterance_id"]: r["logprobs"]
              for r in read_jsonl(folder / "stages" / "labels_scores.jsonl")}
    answers = read_jsonl(folder / "answers.jsonl")
    missing = [a["id"] for a in answers if a["id"] not in scores]
    if missing:
        raise EmoPillarsError(f"{folder}: {len(missing)} references have no stored scores "
                              f"(e.g. {missing[0]}); finish the teacher-eval run first")
    return cfg, answers, [scores[a["id"]] for a in answers]


def rows_for(cfg: GenerateConfig, answers: list[dict], logprobs: list[list[float]],
             priors: list[float], scales: list[float] | None) -> list[dict]:
    out = []
    for a, lp in zip(answers, logprobs):
        rec = label_record({}, lp, priors, None, cfg, scales)
        pl = process_labels([tuple(p) for p in rec["emotions"]], cfg.label_threshold)
        out.append({**a, "pairs": rec["emotions"], "primary": pl.primary_emotion,
                    "predicted": [LABELS[i] for i in pl.labels], "reject_reason": None})
    return out


def sweep(folder: Path, temperatures: list[float]) -> list[dict]:
    cfg, answers, logprobs = load_run(folder)
    half = len(answers) // 2
    results = []
    for calibration in ("none", "run", "run_standardized"):
        priors = priors_from(logprobs) if calibration != "none" else [0.0] * NUM_LABELS
        scales = scales_from(logprobs) if calibration == "run_standardized" else None
        # the temperature changes only what mass and relative keep, not the top-k ranking
        for (rule, k, mass, threshold), t in [(r, t) for r in RULES for t in temperatures
                                              if r[0] != "top_k" or t == temperatures[0]]:
            c = cfg.model_copy(update={"label_threshold": threshold, "scoring": cfg.scoring
                                       .model_copy(update={"calibration": calibration,
                                                           "rule": rule, "k": k, "mass": mass,
                                                           "temperature": t})})
            rows = rows_for(c, answers, logprobs, priors, scales)
            s = score_answers(rows)
            a, b = score_answers(rows[:half]), score_answers(rows[half:])
            results.append({
                "model": cfg.llm.model, "prompt": cfg.scoring.prompt,
                "calibration": calibration, "rule": rule_name(rule, k, mass, threshold),
                "temperature": t,
                "n": s["n"], "micro_f1": s["micro_f1"], "macro_f1": s["macro_f1"],
                "primary_in_reference": s["primary_in_reference"],
                "labels_per_example": s["labels_per_example"]["teacher"],
                "most_predicted": s["most_predicted"],
                "halves_macro_f1": [a["macro_f1"], b["macro_f1"]],
                "halves_micro_f1": [a["micro_f1"], b["micro_f1"]]})
    return results


def markdown(results: list[dict]) -> str:
    lines = ["| model | prompt | calibration | rule | temperature | micro-F1 | macro-F1 | primary in ref. | "
             "labels/ex. | most predicted | macro-F1 1st / 2nd half |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        top = r["most_predicted"]
        lines.append(
            f"| {r['model']} | {r['prompt']} | {r['calibration']} | {r['rule']} | "
            f"{r['temperature']:g} | "
            f"{r['micro_f1']:.3f} | {r['macro_f1']:.3f} | {r['primary_in_reference']:.3f} | "
            f"{r['labels_per_example']:.2f} | {top['label']} {top['examples']}/{r['n']} | "
            f"{r['halves_macro_f1'][0]:.3f} / {r['halves_macro_f1'][1]:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="teacher-eval folders (score mode)")
    ap.add_argument("--out", type=Path, default=Path("runs/teacher_eval/sweep"))
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0],
                    help="scoring.temperature values for the mass and relative rules")
    args = ap.parse_args()
    try:
        results = [r for f in args.folders for r in sweep(f, args.temperatures)]
    except EmoPillarsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(results, indent=1) + "\n")
    md = markdown(results)
    (args.out / "sweep.md").write_text(md)
    print(md)
    for f in args.folders:
        first = [r for r in results if r["model"] == load_run(f)[0].llm.model]
        best = max(first, key=lambda r: r["halves_macro_f1"][0])
        print(f"{f}: best on the first half by macro-F1: {best['calibration']}, {best['rule']}, "
              f"temperature {best['temperature']:g} "
              f"(first half {best['halves_macro_f1'][0]:.3f}, second half "
              f"{best['halves_macro_f1'][1]:.3f}; all {best['n']}: {best['macro_f1']:.3f})")
    print(f"wrote {args.out / 'sweep.md'} and {args.out / 'sweep.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
