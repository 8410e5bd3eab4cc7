"""`emopillars teacher-eval`: the soft-label stage scored against reference labels. Reference
files are written by the tests (never rows of the released data)."""
import functools
import json
from pathlib import Path

import pytest

from data_gen import teacher_eval
from data_gen.config import GenerateConfig
from data_gen.engine import ScriptedEngine, scripted_answer
from data_gen.store import read_jsonl
from emopillars_jax import cli
from emopillars_jax.config import load_config
from emopillars_jax.errors import EmoPillarsError
from emopillars_jax.taxonomy import LABEL_TO_ID, canonical_label

ROOT = Path(__file__).resolve().parent.parent
DEMO = str(ROOT / "configs" / "generate_demo.yaml")
ANSWERS = "labels_method=answer"     # the paper's generated answers (the demo scores labels)
UTTERANCES = [("I can't believe you remembered my birthday, thank you!", ["gratitude", "joy"]),
              ("Get out of my house before I throw you out.", ["anger"]),
              ("The train leaves at nine from platform two.", ["neutral"]),
              ("What if they never come back for us?", ["fear", "nervousness"]),
              ("I finally passed the exam after three tries.", ["pride", "relief"]),
              ("Why would anyone build a door that opens onto a wall?", ["confusion"]),
              ("I miss her laugh every single morning.", ["grief", "sadness"]),
              ("You ruined everything, as usual.", ["annoyance", "disapproval"]),
              ("Oh, a puppy! Can I hold him?", ["excitement", "joy"])]


def write_references(path: Path, rows=UTTERANCES) -> Path:
    path.write_text("".join(json.dumps({"utterance": u, "labels": [LABEL_TO_ID[n] for n in names]})
                            + "\n" for u, names in rows))
    return path


def row(reference, predicted, primary=None, pairs=None, reject=None):
    return {"id": "x", "utterance": "u", "reference": reference, "raw": "", "predicted": predicted,
            "primary": primary, "pairs": pairs if pairs is not None else
            [[p, 0.5] for p in predicted], "unmapped": [], "reject_reason": reject}


def test_scores_of_hand_made_predictions():
    rows = [row(["joy", "love"], ["joy"], "joy", [["joy", 0.9], ["sassiness", 0.8]]),
            row(["anger"], ["anger", "fear"], "fear"),
            row(["neutral"], [], reject="unparseable: repeats the answer template (emotion: 0.5)"),
            row(["sadness"], [], pairs=[["sadness", 0.1]]),   # nothing left after the threshold
            row(["fear"], ["fear", "nervousness"], "fear", [["Fear", 0.8], ["nervousness", 0.6]])]
    s = teacher_eval.score_answers(rows[:4])
    # true positives joy, anger; false positive fear; false negatives love, neutral, sadness
    assert s["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 3))
    # classes present in the references: joy 1, love 0, anger 1, neutral 0, sadness 0
    assert s["macro_f1"] == pytest.approx(2 / 5) and s["macro_f1_classes"] == 5
    assert s["per_class"]["fear"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0,
                                      "predicted": 1}
    assert s["per_class"]["anger"]["f1"] == 1.0 and s["per_class"]["joy"]["recall"] == 1.0
    assert s["primary_in_reference_count"] == 1 and s["primary_in_reference"] == 0.25
    assert s["labels_per_example"] == {"teacher": 0.75, "reference": 1.25}
    assert s["neutral_share"] == {"teacher": 0.0, "reference": 0.25}
    assert (s["answered"], s["rejected"], s["empty_after_threshold"]) == (3, 1, 1)
    assert s["rejects_by_reason"] == {"unparseable: repeats the answer template": 1}
    assert s["unmapped"]["with_unmapped"] == 1 and s["unmapped"]["share"] == round(1 / 3, 4)
    assert s["unmapped"]["top_unmapped"] == [["sassiness", 1]]
    assert s["most_predicted"] in ({"label": "joy", "examples": 1},
                                   {"label": "anger", "examples": 1},
                                   {"label": "fear", "examples": 1})
    assert s["example_copies"] is None
    # the json prompt's example answer, copied (weak models do, whatever the utterance)
    example = teacher_eval.prompt_example("json")
    assert example == [["fear", 0.8], ["nervousness", 0.6]]
    assert teacher_eval.prompt_example("free") is None
    s = teacher_eval.score_answers(rows, example)
    assert s["example_copies"] == 1 and s["most_predicted"] == {"label": "fear", "examples": 2}
    # tp joy, anger, fear; fp fear, nervousness; fn love, neutral, sadness
    assert s["micro_f1"] == round(2 * 3 / (2 * 3 + 2 + 3), 4)   # scores are rounded to 4


def test_malformed_reference_rows_are_one_line_errors(tmp_path, capsys, monkeypatch):
    refs = write_references(tmp_path / "refs.jsonl")
    lines = refs.read_text().splitlines()
    for bad, message in (("{not json", "refs.jsonl:2: invalid JSON"),
                         ('{"utterance": "hi"}', "refs.jsonl:2: missing field 'labels'"),
                         ('{"utterance": "hi", "labels": [40]}', "refs.jsonl:2: labels: expected "
                                                                  "label ids in 0..27")):
        refs.write_text("\n".join([lines[0], bad] + lines[2:]) + "\n")
        with pytest.raises(EmoPillarsError, match=message):
            teacher_eval.read_references(refs, 5)
        assert cli.main(["teacher-eval", "-c", DEMO, "--references", str(refs),
                         "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{refs}:2:" in err
    assert not (tmp_path / "out").exists()   # nothing written, no model loaded
    monkeypatch.chdir(tmp_path)   # no data/emopillars here: the default references are missing
    assert cli.main(["teacher-eval", "-c", DEMO]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data/emopillars/validation.jsonl" in err \
        and "emopillars data download emopillars" in err and "--references" in err


class Interrupt(Exception):
    pass


def counting_engine(stop_after=None):
    """A scripted engine (one sequence: chunks of 4 items) that raises after `stop_after`
    answers, like a run killed mid-chunk."""
    asked = []

    def answer(req):
        if stop_after is not None and len(asked) >= stop_after:
            raise Interrupt
        asked.append(req.key)
        return scripted_answer(req)
    eng = ScriptedEngine(answer, width=1)
    return eng, asked


def test_resume_does_not_ask_finished_items_again(tmp_path):
    refs = write_references(tmp_path / "refs.jsonl")
    cfg = load_config(GenerateConfig, DEMO, [ANSWERS, "progress=false"])
    whole = teacher_eval.evaluate_teacher(cfg, refs, 9, tmp_path / "whole",
                                          engine=counting_engine()[0])
    out = tmp_path / "resumed"
    eng, asked = counting_engine(stop_after=6)   # dies in the second chunk (items 4-7)
    with pytest.raises(Interrupt):
        teacher_eval.evaluate_teacher(cfg, refs, 9, out, engine=eng)
    assert [r["utterance_id"] for r in read_jsonl(out / "stages" / "labels.jsonl")] == \
        [f"ref-{i:05d}" for i in range(4)]
    eng, asked = counting_engine()
    again = teacher_eval.evaluate_teacher(cfg, refs, 9, out, engine=eng)
    assert asked == [f"ref-{i:05d}" for i in range(4, 9)]   # the unfinished chunk, whole
    assert again["timing"]["this_session"]["new"] == 5
    stored = (out / "stages" / "labels.jsonl").read_text().splitlines()
    assert sorted(stored) == sorted((tmp_path / "whole" / "stages" / "labels.jsonl")
                                    .read_text().splitlines())    # no duplicate, no loss
    assert {k: again[k] for k in ("micro_f1", "macro_f1", "per_class")} == \
        {k: whole[k] for k in ("micro_f1", "macro_f1", "per_class")}
    eng, asked = counting_engine()
    done = teacher_eval.evaluate_teacher(cfg, refs, 9, out, engine=eng)
    assert asked == [] and done["timing"]["this_session"]["new"] == 0
    # time per utterance over the finished sessions (the killed one recorded nothing)
    assert (done["timing"]["sessions"], done["timing"]["labelled"]) == (1, 5)
    assert done["engine_stats"]["calls"] == 5
    # other settings would make the stored answers another teacher's: refused
    with pytest.raises(EmoPillarsError, match="different settings.*answer_mode"):
        teacher_eval.evaluate_teacher(load_config(GenerateConfig, DEMO, [ANSWERS, "answer_mode=free"]),
                                      refs, 9, out, engine=counting_engine()[0])


def test_parroted_and_unmapped_answers_become_rejects_with_their_reason(tmp_path):
    refs = write_references(tmp_path / "refs.jsonl", UTTERANCES[:3])

    def answer(req):
        return {"ref-00000": "emotion: 0.5\n" * 5, "ref-00001": "sassiness: 0.7\nglumness: 0.4",
                "ref-00002": "annoyance: 0.6\nsassiness: 0.5"}[req.key]
    cfg = load_config(GenerateConfig, DEMO, [ANSWERS, "answer_mode=free", "max_retries=1",
                                             "progress=false"])
    out = tmp_path / "out"
    s = teacher_eval.evaluate_teacher(cfg, refs, 3, out, engine=ScriptedEngine(answer))
    rows = {r["id"]: r for r in read_jsonl(out / "answers.jsonl")}
    assert rows["ref-00000"]["reject_reason"] == \
        "unparseable: repeats the answer template (emotion: 0.5)"
    assert rows["ref-00001"]["reject_reason"] == \
        "unparseable: no emotion of the taxonomy (sassiness, glumness)"
    assert rows["ref-00002"]["reject_reason"] is None
    assert rows["ref-00002"]["predicted"] == ["annoyance"]
    assert rows["ref-00002"]["unmapped"] == ["sassiness"]
    assert s["rejects_by_reason"] == {"unparseable: repeats the answer template": 1,
                                      "unparseable: no emotion of the taxonomy": 1}
    assert s["unmapped"]["share"] == 1.0 and s["unmapped"]["top_unmapped"] == [["sassiness", 1]]
    assert s["empty_after_threshold"] == 0 and s["answered"] == 1
    md = (out / "teacher_score.md").read_text()
    assert "| unparseable: repeats the answer template | 1 |" in md and "sassiness 1" in md


def test_end_to_end_with_the_real_smollm2(tmp_path, capsys):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra (.[gen])")
    refs = write_references(tmp_path / "refs.jsonl")
    out = tmp_path / "smol"
    args = ["teacher-eval", "-c", DEMO, "--references", str(refs), "--n", "4", "--out", str(out),
            "llm.model=smollm2-135m", "llm.n_threads=1", "llm.n_ctx=1024", "llm.n_seq=4",
            "max_retries=1", "progress=false", ANSWERS]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "micro-F1" in printed and str(out / "teacher_score.md") in printed
    score = json.loads((out / "teacher_score.json").read_text())
    assert score["n"] == 4 and score["model_file"].endswith(".gguf")
    assert len(score["model_sha256"]) == 64 and score["answer_mode"] == "json"
    assert score["answered"] + score["rejected"] == 4 and score["timing"]["labelled"] == 4
    assert score["engine_stats"]["calls"] >= 4 and score["engine_stats"]["generated_tokens"] > 0
    rows = read_jsonl(out / "answers.jsonl")
    assert [r["id"] for r in rows] == [f"ref-{i:05d}" for i in range(4)]
    assert [r["reference"] for r in rows] == [names for _, names in UTTERANCES[:4]]
    for r in rows:
        assert r["raw"] is not None and (r["reject_reason"] is None) == bool(r["pairs"])
        kept = {canonical_label(n) for n, s in r["pairs"] if s >= score["label_threshold"]}
        assert set(r["predicted"]) == kept - {None}
    # anyone can recompute the score from answers.jsonl
    again = teacher_eval.score_answers(rows, score["prompt_example"])
    assert {k: score[k] for k in again} == again
    for name in ("teacher_score.md", "per_class_f1.png", "label_frequencies.png"):
        assert (out / name).stat().st_size > 0
    assert "| micro-F1 |" in (out / "teacher_score.md").read_text()
    # a rerun answers nothing again and reports the same score
    assert cli.main(args) == 0
    rerun = json.loads((out / "teacher_score.json").read_text())
    assert rerun["timing"]["this_session"]["new"] == 0 and rerun["micro_f1"] == score["micro_f1"]
    assert rerun["timing"]["seconds_per_utterance"] == score["timing"]["seconds_per_utterance"]


def test_scoring_mode_predicts_the_top_classes_of_the_calibrated_scores(tmp_path):
    from data_gen.label_scoring import ScriptedScorer
    from emopillars_jax.taxonomy import LABELS
    refs = write_references(tmp_path / "refs.jsonl", UTTERANCES[:4])
    wanted = {u: names for u, names in UTTERANCES[:4]}

    def logprobs(req):
        # the reference's classes score highest; every class also gets a large shared
        # prior that `run` calibration removes (so "admiration" does not win everything)
        names = next(v for u, v in wanted.items() if u in req.messages[-1]["content"])
        return [-1.0 - (0 if n in names else 5) + (6 if n == "admiration" else 0) for n in LABELS]
    engine = ScriptedEngine(lambda req: "")
    engine.label_scorer = ScriptedScorer(logprobs)
    cfg = load_config(GenerateConfig, DEMO, ["labels_method=score", "scoring.calibration=run",
                                             "scoring.rule=top_k", "scoring.k=2",
                                             "scoring.prompt=project",
                                             "progress=false"])
    s = teacher_eval.evaluate_teacher(cfg, refs, 4, tmp_path / "score", engine=engine)
    rows = read_jsonl(tmp_path / "score" / "answers.jsonl")
    for r, (_, names) in zip(rows, UTTERANCES[:4]):
        assert len(r["predicted"]) == 2 and set(names) <= set(r["predicted"])
        assert r["primary"] in names
        assert json.loads(r["raw"])["scores"][0][0] == r["primary"]
    assert s["labels_method"] == "score" and s["calibration"]["method"] == "run"
    assert s["method"] == "scores, project prompt, calibration run, top-2"
    assert s["primary_in_reference"] == 1.0 and s["rejected"] == 0
    assert s["example_copies"] is None
    assert "(scores, project prompt" in (tmp_path / "score" / "teacher_score.md").read_text()
    # uncalibrated, the shared prior wins everywhere
    raw = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"calibration": "none"})})
    s = teacher_eval.evaluate_teacher(raw, refs, 4, tmp_path / "raw", engine=engine)
    assert s["most_predicted"] == {"label": "admiration", "examples": 4}
    assert s["primary_in_reference"] == 0.0
    # a different calibration would make the stored labels another teacher's: refused
    with pytest.raises(EmoPillarsError, match="different settings"):
        teacher_eval.evaluate_teacher(raw, refs, 4, tmp_path / "score", engine=engine)
