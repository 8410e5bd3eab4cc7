"""`emopillars demo` wiring on a tiny setting: SmolLM2 through all six stages on one plot,
two MiniLM students for a few steps, export verified against PyTorch, predictions, summary;
then a re-run resumes from the state file without redoing any phase."""
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


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    cfg = load_config(demo.DemoConfig, "configs/demo.yaml", [f"out_dir={out}", *TINY])
    return out, cfg, demo.run_demo(cfg)


def test_demo_runs_every_phase_and_summarises(tiny_demo):
    out, _, summary = tiny_demo
    state = json.loads((out / "demo_state.json").read_text())
    assert list(state) == ["generate", "train_contextless", "train_contextual",
                           "export_contextless", "export_contextual", "predict"]
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
    # one prediction per example, each from the student of its kind, labels from the taxonomy
    rows = summary["predictions"]
    assert [(r["model"], r["context"] is not None) for r in rows] == \
        [("contextless", False), ("contextual", True)]
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
