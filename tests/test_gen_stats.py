import functools
import json

import numpy as np

from data_gen import pipeline, stats
from data_gen.config import GenerateConfig
from data_gen.engine import ScriptedEngine, scripted_answer
from emopillars_jax.config import load_config


def test_distinct_n_and_cosine_logic():
    assert stats.distinct_n(["a b a b"], 1) == 0.5
    assert stats.distinct_n(["a b c", "a b d"], 2) == 0.75
    e = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    out = stats.cosine_within_across(e, ["x", "x", "y", "y"])
    assert out["within"] == 1.0 and out["across"] == 0.0
    assert out["within_pairs"] == 2 and out["across_pairs"] == 4


def test_report_with_real_minilm_embeddings(tmp_path):
    cfg = load_config(GenerateConfig, None, [f"out_dir={tmp_path / 'run'}", "corpus.max_plots=2",
                                             "progress=false"])
    pipeline.generate(cfg, engine=ScriptedEngine(functools.partial(scripted_answer)))
    out = stats.write_report(tmp_path / "run", tmp_path / "report")
    report = json.loads((out / "report.json").read_text())
    cos = report["embedding_cosine"]
    assert "skipped" not in cos, cos
    for group in ("all", "neutral", "emotional"):
        assert -1 <= cos[group]["across"] <= 1 and -1 <= cos[group]["within"] <= 1
    # the scripted neutral lines are near-identical templates: far more similar than 'all'
    assert cos["neutral"]["across"] > cos["all"]["across"]
    md = (out / "report.md").read_text()
    assert "within character" in md and "![stages_and_diversity]" in md
    assert (out / "stages_and_diversity.png").exists()


def test_bad_runs_are_one_line_errors_and_leave_no_report_folder(tmp_path):
    import pytest
    from emopillars_jax.errors import EmoPillarsError
    (tmp_path / "notrun").mkdir()
    with pytest.raises(EmoPillarsError, match="not a generation run"):
        stats.write_report(tmp_path / "notrun", embeddings=False)
    assert not (tmp_path / "notrun" / "stats").exists()
    run = tmp_path / "run"
    cfg = load_config(GenerateConfig, None, [f"out_dir={run}", "corpus.max_plots=1",
                                             "progress=false"])
    pipeline.generate(cfg, engine=ScriptedEngine(functools.partial(scripted_answer)))
    train = run / "dataset" / "contextless" / "train.jsonl"
    records = [json.loads(line) for line in train.read_text().splitlines()]
    for change, message in ((lambda r: r.pop("labels"), "record 2: no 'labels' field"),
                            (lambda r: r["labels"].append(99),
                             "record 2: 'labels' must be a list of label ids 0-27, got 99")):
        bad = [dict(r, labels=list(r["labels"])) for r in records]
        change(bad[1])
        train.write_text("".join(json.dumps(r) + "\n" for r in bad))
        with pytest.raises(EmoPillarsError, match=f"{train}: {message}"):
            stats.write_report(run, embeddings=False)
        assert not (run / "stats").exists()


def test_report_counts_label_answers_with_unmapped_names(tmp_path):
    def answer(req):
        text = scripted_answer(req)
        if req.stage != "labels" or len(req.messages[1]["content"]) % 3:
            return text
        pairs = json.loads(text)["emotions"][:3] + [{"emotion": "sassiness", "level": 0.9},
                                                    {"emotion": "Zest", "level": 0.2}]
        return json.dumps({"emotions": pairs})
    run = tmp_path / "run"
    cfg = load_config(GenerateConfig, None, [f"out_dir={run}", "corpus.max_plots=2",
                                             "progress=false"])
    pipeline.generate(cfg, engine=ScriptedEngine(answer))
    labels = [json.loads(line)
              for line in (run / "stages" / "labels.jsonl").read_text().splitlines()]
    odd = sum(any(n == "sassiness" for n, _ in r["emotions"]) for r in labels)
    assert 0 < odd < len(labels)
    out = stats.write_report(run, embeddings=False)
    got = json.loads((out / "report.json").read_text())["label_answers"]
    assert got == {"answers": len(labels), "with_unmapped": odd,
                   "share": round(odd / len(labels), 4),
                   "top_unmapped": [["sassiness", odd], ["zest", odd]]}
    md = (out / "report.md").read_text()
    assert f"{odd} of {len(labels)}" in md and f"sassiness {odd}, zest {odd}" in md
