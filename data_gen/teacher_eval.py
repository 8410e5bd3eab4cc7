"""`emopillars teacher-eval`: how well a GGUF teacher's soft labels agree with reference
labels (by default the paper's released data, labelled by Mistral-7B-Instruct), measured
with the project's own soft-label stage: the prompts, parser, retries and rejects, label
processing and engine of `emopillars generate`, so the score is that of the labels a
generation run with the same config would give.

Layout under OUT:
    stages/labels.jsonl, rejects.jsonl, manifest.json   resumable stage files (as generate's)
    answers.jsonl        per reference: its labels, the raw answer, parsed pairs, prediction
    teacher_score.json, teacher_score.md, per_class_f1.png, label_frequencies.png

A rejected answer, and one with no label left after the threshold, predicts no label.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np

from emopillars_jax.config import load_config
from emopillars_jax.errors import EmoPillarsError
from emopillars_jax.evaluation import metrics
from emopillars_jax.taxonomy import LABEL_TO_ID, LABELS, NEUTRAL, NUM_LABELS, normalize_name

from . import prompts
from .config import GenerateConfig
from .engine import Engine, EngineStats
from .labels import process_labels
from .parsing import ParseError, parse_labels
from .pipeline import _check_resume, _load_manifest, _write_json, make_provenance, now, \
    stage_runner, versions
from .stages import STAGES
from .stats import reason_kind, unmapped_lines, unmapped_summary
from .store import Store, write_jsonl_atomic

DEFAULT_REFERENCES = Path("data/emopillars/validation.jsonl")
# the labels prompt names who speaks; references carry no character
DEFAULT_CHARACTER = "Someone"


# ------------------------------------------------------------------------ inputs

def read_references(path: Path, n: int) -> list[dict]:
    """The first `n` references of a JSON Lines file of {"utterance", "labels": [ids]}, with
    a stable id (their position in the file)."""
    from emopillars_jax.data import read_examples
    path = Path(path)
    if not path.is_file():
        hint = "run `emopillars data download emopillars` or pass --references FILE (e.g. " \
               "../shared/data/emopillars/validation.jsonl)" if path == DEFAULT_REFERENCES \
            else 'expected JSON Lines of {"utterance", "labels": [label ids]}'
        raise EmoPillarsError(f"{path}: reference file not found: {hint}")
    ex = read_examples(path, format="emopillars", num_labels=NUM_LABELS, max_examples=n)
    return [{"id": f"ref-{i:05d}", "utterance": text,
             "labels": [LABELS[j] for j in np.flatnonzero(row)]}
            for i, (text, row) in enumerate(zip(ex.text_a, ex.targets))]


def label_item(ref: dict, character: str) -> dict:
    """The labels stage's input item for a reference, shaped like stages.utterance_items'
    (the prompt reads only the character and the utterance)."""
    return {"utterance_id": ref["id"], "utterance": ref["utterance"], "character": character}


def label_items(items: list[dict], engine: Engine, cfg: GenerateConfig, store: Store,
                rejects: Store) -> dict:
    """Label `items` with the teacher, resumably, by the configured labels_method (generated
    answers, or label scoring); returns the stage summary."""
    return stage_runner("labels", cfg)(STAGES["labels"], items, engine, cfg, store, rejects)


# ------------------------------------------------------------------------ scoring

def answer_rows(refs: list[dict], store: Store, rejects: Store, threshold: float) -> list[dict]:
    """One row per reference: what the teacher answered and what that predicts."""
    rows = []
    for ref in refs:
        row = {"id": ref["id"], "utterance": ref["utterance"], "reference": ref["labels"],
               "raw": None, "pairs": [], "predicted": [], "primary": None, "unmapped": [],
               "reject_reason": None}
        rec, rej = store.get(ref["id"]), rejects.get(f"labels:{ref['id']}")
        if rec is not None:
            pl = process_labels([tuple(p) for p in rec["emotions"]], threshold)
            row.update(raw=rec["raw"], pairs=rec["emotions"], primary=pl.primary_emotion,
                       predicted=[LABELS[i] for i in pl.labels], unmapped=pl.unmapped)
        else:
            row.update(raw=rej["raw"] if rej else None,
                       reject_reason=rej["reason"] if rej else "not answered")
        rows.append(row)
    return rows


def prompt_example(answer_mode: str) -> list[list] | None:
    """The [name, level] pairs of the example the labels prompt shows in this answer mode
    (json: fear 0.8, nervousness 0.6), or None when it shows none."""
    try:
        pairs = parse_labels(prompts.templates()["stages"]["labels"][answer_mode], answer_mode)
    except ParseError:
        return None
    return [[normalize_name(n), s] for n, s in pairs]


def _multi_hot(names_per_row: list[list[str]]) -> np.ndarray:
    out = np.zeros((len(names_per_row), NUM_LABELS), bool)
    for i, names in enumerate(names_per_row):
        out[i, [LABEL_TO_ID[n] for n in names]] = True
    return out


def score_answers(rows: list[dict], example: list[list] | None = None) -> dict:
    """Agreement of the teacher's predictions with the references (answers.jsonl rows);
    `example`: the prompt's example answer, whose verbatim copies are counted."""
    n = len(rows)
    gold = _multi_hot([r["reference"] for r in rows])
    pred = _multi_hot([r["predicted"] for r in rows])
    m = metrics(gold, pred)
    for name, c in m["per_class"].items():
        c["predicted"] = int(pred[:, LABEL_TO_ID[name]].sum())
    answered = [r for r in rows if r["reject_reason"] is None]
    hits = sum(r["primary"] is not None and r["primary"] in r["reference"] for r in rows)
    top = Counter(p for r in rows for p in r["predicted"]).most_common(1)
    mean = lambda x: round(float(x.sum(1).mean()), 4) if n else 0.0  # noqa: E731
    share = lambda x: round(float(x[:, LABEL_TO_ID[NEUTRAL]].mean()), 4) if n else 0.0  # noqa: E731
    return {
        "n": n, "micro_f1": round(m["micro_f1"], 4), "macro_f1": round(m["macro_f1"], 4),
        "weighted_f1": round(m["weighted_f1"], 4),
        "macro_f1_classes": int((gold.sum(0) > 0).sum()),
        "primary_in_reference": round(hits / n, 4) if n else 0.0,
        "primary_in_reference_count": hits,
        "labels_per_example": {"teacher": mean(pred), "reference": mean(gold)},
        "neutral_share": {"teacher": share(pred), "reference": share(gold)},
        "most_predicted": {"label": top[0][0], "examples": top[0][1]} if top else None,
        "answered": len(answered), "rejected": n - len(answered),
        "empty_after_threshold": sum(not r["predicted"] for r in answered),
        "example_copies": sum([[normalize_name(name), s] for name, s in r["pairs"]] == example
                              for r in answered) if example else None,
        "rejects_by_reason": dict(Counter(reason_kind(r["reject_reason"]) for r in rows
                                          if r["reject_reason"] is not None).most_common()),
        "unmapped": unmapped_summary([r["pairs"] for r in answered]),
        "per_class": m["per_class"],
    }


# ------------------------------------------------------------------------ reports

def markdown(report: dict) -> str:
    r = report
    lpe, neu = r["labels_per_example"], r["neutral_share"]
    top = r["most_predicted"]
    s_per = r["timing"]["seconds_per_utterance"]
    lines = [
        f"# Teacher score: {r['model']} ({r['method']}) on {r['n']} references", "",
        f"- model file: {r['model_file']} (sha256 {r['model_sha256']}), engine {r['engine']}",
        f"- references: {r['references']} (first {r['n']}, sha256 "
        f"{r['references_sha256'][:16]}...)",
        f"- prompt: the soft-label stage's (version {r['prompt_version']}); the speaker is "
        f"called \"{r['character']}\" (references name no character)",
        f"- label threshold {r['label_threshold']}; rejected answers and answers with no label "
        "left after the threshold count as predicting no label",
        "", "| metric | value |", "|---|---|",
        f"| micro-F1 | {r['micro_f1']:.4f} |",
        f"| macro-F1 ({r['macro_f1_classes']} classes present in the references) "
        f"| {r['macro_f1']:.4f} |",
        f"| primary emotion is a reference label | {r['primary_in_reference_count']}/{r['n']} "
        f"({r['primary_in_reference']:.3f}) |",
        f"| answered / rejected | {r['answered']} / {r['rejected']} |",
        f"| answers empty after the threshold | {r['empty_after_threshold']} |",
        *([f"| answers that are the prompt's example verbatim ("
           + ", ".join(f"{n} {s:g}" for n, s in r["prompt_example"]) + ") | "
           f"{r['example_copies']}/{r['n']} |"] if r["prompt_example"] else []),
        f"| most predicted label | {top['label']} in {top['examples']}/{r['n']} |" if top else
        "| most predicted label | none |",
        f"| seconds per utterance | {s_per if s_per is not None else 'n/a'} |",
        "", "| | teacher | reference |", "|---|---|---|",
        f"| labels per example | {lpe['teacher']:.3f} | {lpe['reference']:.3f} |",
        f"| neutral share | {neu['teacher']:.3f} | {neu['reference']:.3f} |",
        "", "## Rejects by reason", ""]
    if r["rejects_by_reason"]:
        lines += ["| reason | answers |", "|---|---|"] + \
            [f"| {k} | {v} |" for k, v in r["rejects_by_reason"].items()]
    else:
        lines.append("none")
    lines += ["", "## Names outside the taxonomy (answered, not rejected)", ""] + \
        unmapped_lines(r["unmapped"])
    lines += ["", "## Per class", "", "| class | precision | recall | F1 | reference | teacher |",
              "|---|---|---|---|---|---|"]
    for name, c in r["per_class"].items():
        lines.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | "
                     f"{c['support']} | {c['predicted']} |")
    t, st, now_ = r["timing"], r["engine_stats"], r["timing"]["this_session"]
    lines += ["", "## Time and engine", "",
              f"- {t['labelled']} references labelled in {t['labelling_seconds']} s over "
              f"{t['sessions']} finished session(s) (retries included; a killed session's time "
              f"and answers are not counted); {st['calls']} LLM calls, {st['prompt_tokens']} "
              f"prompt tokens ({st['cached_prompt_tokens']} of them from cached prefixes) and "
              f"{st['generated_tokens']} generated tokens",
              f"- this session: {now_['new']} new in {now_['labelling_seconds']} s, "
              f"{now_['wall_seconds']} s with model loading and scoring",
              "", "![per-class F1](per_class_f1.png)", "",
              "![label frequencies](label_frequencies.png)"]
    return "\n".join(lines) + "\n"


def plot_report(report: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pc = report["per_class"]
    x = np.arange(len(pc))
    title = f"{report['model']} ({report['method']}), {report['n']} references"
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.bar(x, [c["f1"] for c in pc.values()], color="#4c72b0")
    ax.set_xticks(x, list(pc), rotation=60, ha="right")
    for tick, c in zip(ax.get_xticklabels(), pc.values()):
        if not c["support"]:    # outside macro-F1
            tick.set_color("#aaaaaa")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 vs reference")
    ax.set_title(f"Per-class F1: {title}; micro {report['micro_f1']:.3f}, macro "
                 f"{report['macro_f1']:.3f} (grey names: not in the references)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "per_class_f1.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.bar(x - 0.2, [c["support"] for c in pc.values()], 0.4, label="reference", color="#55a868")
    ax.bar(x + 0.2, [c["predicted"] for c in pc.values()], 0.4, label="teacher", color="#c44e52")
    ax.set_xticks(x, list(pc), rotation=60, ha="right")
    ax.set_ylabel("examples with the label")
    ax.set_title(f"Label frequencies: {title}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "label_frequencies.png", dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------ command

def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def labels_prompt_sha256() -> str:
    """Hash of the templates the labels stage renders (system, labels in both answer modes,
    and the scoring prompts)."""
    t = prompts.templates()
    return hashlib.sha256(json.dumps([t["system"], t["stages"]["labels"], t.get("scoring")],
                                     sort_keys=True)
                          .encode()).hexdigest()


def session_timing(sessions: list[dict]) -> dict:
    """Labelling time over the finished sessions of a folder (a killed session records
    neither its time nor its answers' count, so the rate stays a ratio of the two)."""
    new = sum(s["labels"]["new"] for s in sessions)
    seconds = sum(s["labels"]["seconds"] for s in sessions)
    return {"sessions": len(sessions), "labelled": new, "labelling_seconds": round(seconds, 2),
            "seconds_per_utterance": round(seconds / new, 3) if new else None}


def method_name(cfg: GenerateConfig) -> str:
    """How the teacher labels, in a few words (json / free answers, or a scoring variant)."""
    if cfg.labels_method != "score":
        return f"{cfg.answer_mode} answers"
    sc = cfg.scoring
    rule = {"top_k": f"top-{sc.k}", "mass": f"mass {sc.mass:g}",
            "relative": f"relative >= {cfg.label_threshold:g}"}[sc.rule]
    return f"scores, {sc.prompt} prompt, calibration {sc.calibration}, {rule}"


def default_out(cfg: GenerateConfig, n: int) -> Path:
    model = re.sub(r"\.gguf$", "", Path(cfg.llm.model).name)
    mode = cfg.answer_mode if cfg.labels_method != "score" else f"score-{cfg.scoring.prompt}"
    return Path("runs/teacher_eval") / f"{model}-{mode}-n{n}"


def evaluate_teacher(cfg: GenerateConfig, references: Path, n: int, out: Path | None = None,
                     character: str = DEFAULT_CHARACTER, engine: Engine | None = None) -> dict:
    """Label the first `n` references (resuming what OUT/stages holds), score, and write
    the reports; returns the teacher score."""
    t0 = time.perf_counter()
    refs = read_references(references, n)
    out = Path(out) if out else default_out(cfg, len(refs))
    sdir = out / "stages"
    sdir.mkdir(parents=True, exist_ok=True)
    opened = engine is None
    if opened:
        from .engine import open_engine
        engine = open_engine(cfg.llm)
    try:
        prov = make_provenance(cfg, engine)
        # what must not change for the stored answers to stay valid (cf. pipeline.fingerprint);
        # of the prompts file only what the labels stage reads
        skip = ("engine", "n_ctx", "decoding", "prompt_sha256", "prompt_version")
        fp = {**{k: v for k, v in prov.items() if k not in skip},
              "labels_prompt_sha256": labels_prompt_sha256(),
              "decoding": cfg.decoding.labels.model_dump(), "max_retries": cfg.max_retries,
              "character": character, "references_sha256": _sha256(references)}
        old = _load_manifest(sdir / "manifest.json")
        _check_resume(old, fp, sdir)
        sessions = (old or {}).get("sessions", [])
        manifest = {"fingerprint": fp, "provenance": prov, "versions": versions(),
                    "config": cfg.model_dump(mode="json"), "sessions": sessions}
        _write_json(sdir / "manifest.json", manifest)
        store = Store(sdir / "labels.jsonl", STAGES["labels"].key)
        rejects = Store(sdir / "rejects.jsonl", "id")
        started = now()
        summary = label_items([label_item(r, character) for r in refs], engine, cfg, store,
                              rejects)
        if summary["new"]:    # a session that asked nothing adds no time
            sessions = sessions + [{"started": started, "finished": now(), "labels": summary,
                                    "engine_stats": vars(engine.stats)}]
            _write_json(sdir / "manifest.json", {**manifest, "sessions": sessions})
    finally:
        if opened:
            engine.close()
    rows = answer_rows(refs, store, rejects, cfg.label_threshold)
    example = prompt_example(cfg.answer_mode) if cfg.labels_method != "score" else None
    write_jsonl_atomic(out / "answers.jsonl", rows)
    report = {"model": cfg.llm.model, "model_file": prov["model"],
              "model_sha256": prov["model_sha256"], "engine": prov["engine"],
              "answer_mode": cfg.answer_mode, "labels_method": cfg.labels_method,
              "method": method_name(cfg), "calibration": summary.get("calibration"),
              "prompt_version": prov["prompt_version"],
              "references": str(references), "references_sha256": fp["references_sha256"],
              "character": character, "label_threshold": cfg.label_threshold,
              "prompt_example": example, **score_answers(rows, example),
              "timing": {**session_timing(sessions), "this_session": {
                  "new": summary["new"], "labelling_seconds": summary["seconds"],
                  "wall_seconds": round(time.perf_counter() - t0, 2)}},
              "engine_stats": {k: round(sum(s["engine_stats"].get(k, 0) for s in sessions), 2)
                               for k in vars(EngineStats())}}
    (out / "teacher_score.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "teacher_score.md").write_text(markdown(report))
    plot_report(report, out)
    report["out"] = str(out)
    return report


def run_cli(args) -> int:
    if args.n < 1:
        raise EmoPillarsError(f"--n: expected at least 1 reference, got {args.n}")
    cfg = load_config(GenerateConfig, args.config, args.overrides)
    refs = Path(args.references) if args.references else DEFAULT_REFERENCES
    r = evaluate_teacher(cfg, refs, args.n, Path(args.out) if args.out else None,
                         args.character or DEFAULT_CHARACTER)
    lpe, neu, top = r["labels_per_example"], r["neutral_share"], r["most_predicted"]
    print(f"teacher {r['model']} ({r['method']}) on {r['n']} references of {refs}:")
    print(f"  micro-F1 {r['micro_f1']:.4f}  macro-F1 {r['macro_f1']:.4f}  primary in reference "
          f"{r['primary_in_reference']:.3f}")
    print(f"  labels/example {lpe['teacher']:.2f} (reference {lpe['reference']:.2f})  neutral "
          f"share {neu['teacher']:.3f} (reference {neu['reference']:.3f})")
    print(f"  rejected {r['rejected']}, empty after threshold {r['empty_after_threshold']}, "
          f"answers with unmapped names {r['unmapped']['share']:.3f}"
          + (f", most predicted {top['label']} ({top['examples']}/{r['n']})" if top else ""))
    if r["example_copies"]:
        print(f"  {r['example_copies']}/{r['n']} answers are the prompt's example verbatim")
    out = Path(r["out"])
    for name in ("teacher_score.md", "teacher_score.json", "answers.jsonl", "per_class_f1.png",
                 "label_frequencies.png"):
        print(f"  {out / name}")
    return 0
