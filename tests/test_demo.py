"""`emopillars demo` wiring on a tiny setting: SmolLM2 through all six stages on one plot,
two MiniLM students for a few steps, a student on a small release-shaped dataset, export
verified against PyTorch, scores on held-out data, predictions, summary; then a re-run
resumes from the state file without redoing any phase."""
import json

import pytest

from emopillars_jax import demo, training
from emopillars_jax.cli import main
from emopillars_jax.config import load_config

TINY = [
    "generate.llm.model=smollm2-135m", "generate.llm.n_threads=1", "generate.llm.n_ctx=1536",
    "generate.llm.n_seq=4", "generate.corpus.max_plots=1", "generate.max_characters=2",
    "generate.utterances_non_neutral=2", "generate.utterances_neutral=1",
    "generate.context_fraction=1.0", "generate.max_retries=1", "generate.progress=false",
    # a low threshold so the 135M model's weak scores still leave labelled examples
    "generate.label_threshold=0.1",
    "generate.splits_contextless=[1.0, 0.0, 0.0]", "generate.splits_contextual=[1.0, 0.0, 0.0]",
    "generate.decoding.characters.max_tokens=100", "generate.decoding.utterances.max_tokens=200",
    "generate.decoding.labels.max_tokens=100", "generate.decoding.context.max_tokens=120",
    "generate.decoding.cleaning.max_tokens=120", "generate.decoding.rewriting.max_tokens=60",
    "stats_embeddings=false",
    "train.max_steps=2", "train.batch_size=4", "train.progress=false",
    "train.data.max_length=32", "train.data.bucket_boundaries=[32]",
    "examples=[{text: 'What a lovely surprise!'}, "
    "{context: 'The ship sank in the storm.', text: 'We lost everything.'}]",
]


RELEASE_TINY = ["release.max_steps=2", "release.batch_size=4", "release.progress=false",
                "release.data.max_length=32", "release.data.bucket_boundaries=[32]"]


def release_folder(folder):
    """A release-shaped dataset written here: {utterance, labels} rows, train + validation."""
    folder.mkdir(parents=True)
    rows = [("Thank you so much for coming, it means the world to me.", [15]),
            ("Why would he take the map? None of this makes sense.", [6, 7]),
            ("I will never forgive myself for leaving her there.", [24, 25]),
            ("The ship leaves at dawn, so we pack tonight.", [27]),
            ("What a wonderful surprise, I never expected this!", [17, 26]),
            ("Get out of my house before I lose my temper.", [2])]
    for name, part in (("train.jsonl", rows * 2), ("validation.jsonl", rows[:4])):
        (folder / name).write_text("".join(json.dumps({"utterance": u, "labels": l}) + "\n"
                                           for u, l in part))
    return folder


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    release = release_folder(tmp_path_factory.mktemp("release") / "emopillars")
    cfg = load_config(demo.DemoConfig, "configs/demo.yaml",
                      [f"out_dir={out}", *TINY, f"emopillars={release}", *RELEASE_TINY])
    return out, cfg, demo.run_demo(cfg)


def test_demo_runs_every_phase_and_summarises(tiny_demo):
    out, _, summary = tiny_demo
    state = json.loads((out / "demo_state.json").read_text())
    assert list(state) == ["generate", "train_contextless", "train_contextual",
                           "export_contextless", "export_contextual", "train_release",
                           "score_students", "predict"]
    assert summary["dataset_counts"]["contextless"]["train"] > 0
    assert (out / "generate" / "dataset" / "contextual" / "train.jsonl").stat().st_size > 0
    assert (out / "generate" / "stats" / "report.md").is_file()
    assert list((out / "generate" / "stats").glob("*.png"))
    assert (out / "train_contextless" / "history.jsonl").stat().st_size > 0
    for mode in ("contextless", "contextual"):
        folder = out / "export" / f"minilm-emopillars-{mode}"
        assert summary["exported"][mode]["verified"]
        for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
            assert (folder / name).is_file(), name
        assert summary["students"][mode]["step"] == 2
    # the release student: trained, exported (verified), scored with the generated-data one
    release = summary["release_student"]
    assert release["step"] == 2 and release["train_examples"] == 12
    assert (out / "export" / "minilm-emopillars-release" / "config.json").is_file()
    scores = summary["held_out_scores"]
    assert set(scores) == {"generated data", "released data"}
    for per_set in scores.values():
        m = per_set["Emo Pillars validation"]
        assert m["examples"] == 4 and 0 <= m["macro_f1"] <= m["macro_f1_swept"] <= 1
    # one prediction per example and student, labels from the taxonomy
    rows = summary["predictions"]
    assert [(r["model"], r["context"] is not None) for r in rows] == \
        [("contextless", False), ("released data", False), ("contextual", True)]
    assert all(len(r["top3"]) == 3 and 0 <= r["top3"][0][1] <= 1 for r in rows)
    assert set(summary["phase_seconds"]) == set(state)
    assert summary["peak_memory_gb"] > 0
    assert json.loads((out / "summary.json").read_text())["predictions"] == rows


def test_demo_rerun_resumes_without_redoing_phases(tiny_demo, monkeypatch):
    out, cfg, first = tiny_demo

    def must_not_train(*_a, **_k):
        raise AssertionError("a finished training phase ran again")
    monkeypatch.setattr(training, "train", must_not_train)
    again = demo.run_demo(cfg)
    assert again["phase_seconds"] == first["phase_seconds"]
    assert again["predictions"] == first["predictions"]


def test_demo_refuses_an_unknown_key(capsys):
    assert main(["demo", "generate.llm.modle=x"]) != 0
    err = capsys.readouterr().err
    assert "generate.llm.modle" in err and "\n" not in err.strip()


def summary_of(tiny_demo):
    return json.loads((tiny_demo[0] / "summary.json").read_text())


def test_summary_says_what_each_score_is_computed_on(tiny_demo, capsys):
    summary = summary_of(tiny_demo)
    demo.print_summary(summary)
    text = capsys.readouterr().out
    # (the tiny generated set has no dev plot; the release student's dev is its validation)
    n_dev = summary["release_student"]["metrics"]["dev"]["examples"]
    assert n_dev == 4 and "on 4 examples" in text and "a rough indication" in text
    assert "teacher labels (" in text
    assert "Emo Pillars validation (4 examples)" in text and "trained on released data" in text
    # the trivial reference every held-out score is read against
    every = summary["held_out_scores"]["released data"]["Emo Pillars validation"]
    assert f"predicting every label for every example: {every['every_label_macro_f1']:.3f}" in text
    # the same sentence, answered by both context-less students side by side
    block = text.split("'What a lovely surprise!'")[1]
    assert "contextless" in block.split("\n")[1] and "released data" in block.split("\n")[2]


def test_summary_calls_out_every_label_answers(tiny_demo, capsys):
    from emopillars_jax.taxonomy import LABELS
    # the failure the demo used to hide: 1.000 on 2 test examples from a student that puts
    # every label on everything (when every label also scores 1.000)
    every = {"macro_f1": 1.0, "micro_f1": 0.3, "threshold": 0.05, "examples": 2,
             "labels_per_example": 28.0, "every_label_macro_f1": 1.0}
    learned = {"macro_f1": 0.62, "micro_f1": 0.6, "threshold": 0.3, "examples": 400,
               "labels_per_example": 1.4, "every_label_macro_f1": 0.12}
    prior = {**learned, "macro_f1": 0.125, "labels_per_example": 3.0}
    students = {"contextless": {"checkpoints": "c", "report": "r",
                                "metrics": {"dev": learned, "test": prior}},
                "contextual": {"checkpoints": "c", "report": "r", "metrics": {"test": every}}}
    predictions = [{"model": "contextual", "context": "ctx", "text": t, "labels": list(LABELS),
                    "top3": [["anger", 0.4], ["joy", 0.3], ["fear", 0.2]]} for t in ("a", "b")]
    predictions.append({"model": "contextless", "context": None, "text": "c",
                        "labels": list(LABELS), "top3": [["anger", 0.4]]})
    predictions.append({"model": "contextless", "context": None, "text": "d",
                        "labels": ["joy"], "top3": [["joy", 0.9]]})
    demo.print_summary({**summary_of(tiny_demo), "students": students,
                        "predictions": predictions})
    lines = capsys.readouterr().out.splitlines()
    i = next(n for n, line in enumerate(lines) if "test  macro-F1 1.000 on 2 examples" in line)
    assert "every label would score 1.000; 28.0 labels each" in lines[i]
    assert "WARNING" in lines[i + 1] and "every-label answer" in lines[i + 1]
    j = next(n for n, line in enumerate(lines) if "test  macro-F1 0.125 on 400" in line)
    assert "WARNING" in lines[j + 1] and "no better than predicting every label" in lines[j + 1]
    k = next(n for n, line in enumerate(lines) if "dev   macro-F1 0.620 on 400" in line)
    assert "every label would score 0.120" in lines[k] and "WARNING" not in lines[k + 1]
    assert sum("-> every label (all 28)" in line for line in lines) == 3
    # only the student with every label on every sentence is called out
    assert [line for line in lines if "puts every label on every sentence" in line] == \
        [line for line in lines if line.startswith("  WARNING: 'contextual' puts every")]
    assert len([line for line in lines if "puts every label on every sentence" in line]) == 1


def test_summary_without_the_release_says_how_to_get_it(tiny_demo, capsys):
    summary = {**summary_of(tiny_demo), "release_student": None, "held_out_scores": {}}
    demo.print_summary(summary)
    text = capsys.readouterr().out
    assert "emopillars data download emopillars" in text and "DEMO_ARGS=emopillars=" in text
    assert "real held-out data" not in text


def test_teacher_label_warning_names_a_dominant_label(tmp_path):
    from emopillars_jax.demo_summary import teacher_labels, teacher_lines
    counts = {name: 0 for name in ("disappointment", "joy", "fear")}
    counts.update(disappointment=9, joy=2)
    (tmp_path / "report.json").write_text(json.dumps({"contextless": {
        "examples": 10, "label_counts": counts, "mean_labels_per_example": 1.1}}))
    lines = teacher_lines(teacher_labels(tmp_path))
    assert "disappointment 90%" in lines[0] and "joy 20%" in lines[0] and "fear" not in lines[0]
    assert "WARNING: 'disappointment' on 90%" in lines[1]
    counts.update(disappointment=5)      # half: no longer dominant
    (tmp_path / "report.json").write_text(json.dumps({"contextless": {
        "examples": 10, "label_counts": counts, "mean_labels_per_example": 0.7}}))
    assert len(teacher_lines(teacher_labels(tmp_path))) == 1
