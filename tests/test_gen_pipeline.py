"""Resumability, sharding, splits and dataset assembly, driven by the scripted engine
(the LLM itself is exercised in test_gen_llm.py)."""
import functools
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_gen import pipeline
from data_gen.config import GenerateConfig
from data_gen.engine import ScriptedEngine, scripted_answer
from data_gen.stages import wants_context
from data_gen.store import Store, read_jsonl
from emopillars_jax.config import load_config
from emopillars_jax.errors import EmoPillarsError

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["corpus.max_plots=5", "progress=false", "max_retries=1"]


def config(out: Path, *extra: str) -> GenerateConfig:
    return load_config(GenerateConfig, None, [f"out_dir={out}", *SMALL, *extra])


def engine(delay: float = 0.0) -> ScriptedEngine:
    return ScriptedEngine(functools.partial(scripted_answer, malformed_every=7), delay=delay)


def dataset_files(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text()
            for p in sorted((out / "dataset").rglob("*.jsonl"))}


def test_store_skips_done_keys_and_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "s.jsonl"
    s = Store(path, "k")
    s.append([{"k": "a", "v": 1}, {"k": "b", "v": 2}])
    s.append([{"k": "a", "v": 99}])               # a done key is never written twice
    with open(path, "a") as fh:
        fh.write('{"k": "c", "v"')                # what a kill mid-write leaves behind
    s2 = Store(path, "k")
    assert sorted(s2.records) == ["a", "b"] and s2.get("a")["v"] == 1
    s2.append([{"k": "c", "v": 3}])
    assert [r["k"] for r in read_jsonl(path)] == ["a", "b", "c"]
    path.write_text('{"k": "a"}\nnot json\n{"k": "b"}\n')
    with pytest.raises(EmoPillarsError, match=r"s\.jsonl:2: corrupted record"):
        Store(path, "k")


def test_full_run_records_and_types(tmp_path):
    cfg = config(tmp_path / "run")
    eng = engine()
    pipeline.generate(cfg, engine=eng)
    out = Path(cfg.out_dir)
    rejects = read_jsonl(out / "stages" / "rejects.jsonl")
    assert rejects and all(r["reason"] and r["attempts"] == 2 for r in rejects)
    rows = [json.loads(line) for f in (out / "dataset" / "contextless").glob("*.jsonl")
            for line in f.read_text().splitlines()]
    ctx_rows = [json.loads(line) for f in (out / "dataset" / "contextual").glob("*.jsonl")
                for line in f.read_text().splitlines()]
    assert rows and ctx_rows
    for r in rows + ctx_rows:
        assert 1 <= len(r["labels"]) <= 5 and r["labels"] == sorted(r["labels"])
        assert all(isinstance(d["score"], float) for d in r["all_emotions_mapped"])
        assert all(min(d["score"] for d in r["all_emotions_mapped"][:len(r["labels"])]) >= 0.3
                   for _ in [0])
        assert r["provenance"]["prompt_version"] and r["provenance"]["model_sha256"]
    for r in ctx_rows:
        assert r["context"] and r["utterance"] != r["original_utterance"]
    # contexts only for the deterministic selection (about a third)
    labelled = read_jsonl(out / "stages" / "labels.jsonl")
    selected = {r["utterance_id"] for r in read_jsonl(out / "stages" / "context.jsonl")}
    assert selected <= {r["utterance_id"] for r in labelled
                        if wants_context(r["utterance_id"], cfg.seed, cfg.context_fraction)}
    assert 0.2 < len(selected) / len(labelled) < 0.5
    # no plot in two splits
    for kind in ("contextless", "contextual"):
        seen = {}
        for f in (out / "dataset" / kind).glob("*.jsonl"):
            for line in f.read_text().splitlines():
                assert seen.setdefault(json.loads(line)["plot_id"], f.stem) == f.stem
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"]["prompt_version"] and manifest["dataset"]["contextless"]
    # a second run finds everything done and asks the engine nothing
    calls = eng.stats.calls
    pipeline.generate(cfg, engine=eng)
    assert eng.stats.calls == calls


def test_dataset_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets is a dev extra")
    cfg = config(tmp_path / "run")
    pipeline.generate(cfg, engine=engine())
    for kind in ("contextless", "contextual"):
        d = Path(cfg.out_dir) / "dataset" / kind
        files = {s: str(d / f"{s}.jsonl") for s in pipeline.SPLITS
                 if (d / f"{s}.jsonl").stat().st_size}
        ds = datasets.load_dataset("json", data_files=files, cache_dir=str(tmp_path / "hf"))
        train = ds["train"]
        feats = train.features
        assert feats["all_emotions_mapped"].feature["score"].dtype == "float64"
        assert feats["labels"].feature.dtype == "int64"
        assert len(train[0]["targets"]) == 28 and isinstance(train[0]["context"] if
                                                              kind == "contextual" else "", str)


def test_resume_refuses_changed_settings(tmp_path):
    cfg = config(tmp_path / "run")
    pipeline.generate(cfg, engine=engine())
    with pytest.raises(EmoPillarsError, match="different settings.*max_characters"):
        pipeline.generate(config(tmp_path / "run", "max_characters=4"), engine=engine())


def test_splits_are_by_plot_and_follow_ratios():
    ids = [str(i) for i in range(100)]
    split = pipeline.assign_splits(ids, (0.8, 0.1, 0.1), seed=0)
    counts = {s: sum(v == s for v in split.values()) for s in pipeline.SPLITS}
    assert counts == {"train": 80, "validation": 10, "test": 10}
    assert split == pipeline.assign_splits(list(reversed(ids)), (0.8, 0.1, 0.1), seed=0)
    assert split != pipeline.assign_splits(ids, (0.8, 0.1, 0.1), seed=1)
    tiny = pipeline.assign_splits(["a", "b", "c"], (0.8, 0.1, 0.1), seed=0)
    assert sorted(tiny.values()) == ["test", "train", "validation"]


def test_a_one_plot_run_warns_that_splits_stay_empty(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        pipeline.generate(config(tmp_path / "run", "corpus.max_plots=1"), engine=engine())
    assert "contextless dataset: no examples in validation, test" in caplog.text


def test_shards_then_merge_equal_the_unsharded_run(tmp_path):
    whole = config(tmp_path / "whole")
    pipeline.generate(whole, engine=engine())
    sharded = config(tmp_path / "sharded")
    with pytest.raises(EmoPillarsError, match="no shard folders"):
        pipeline.merge(sharded)
    pipeline.generate(sharded, shard=0, num_shards=3, engine=engine())
    with pytest.raises(EmoPillarsError, match=r"missing shards \[1, 2\]"):
        pipeline.merge(sharded)
    for i in (1, 2):
        pipeline.generate(sharded, shard=i, num_shards=3, engine=engine())
    assert not (tmp_path / "sharded" / "dataset").exists()   # shards do not assemble
    pipeline.merge(sharded)
    a, b = dataset_files(tmp_path / "whole"), dataset_files(tmp_path / "sharded")
    assert a == b and sum(map(len, a.values())) > 0


def test_a_resumed_stage_makes_only_calls_the_uninterrupted_run_made(tmp_path):
    # llama.cpp's answers depend on the batch they are decoded in, so a resumed run must ask
    # the engine the same whole calls, not just the missing items
    ref_engine = engine()
    pipeline.generate(config(tmp_path / "ref"), engine=ref_engine)
    stages = tmp_path / "cut" / "stages"
    shutil.copytree(tmp_path / "ref" / "stages", stages)
    # what a kill inside the labels stage leaves: its last records and every later stage missing
    labels = (stages / "labels.jsonl").read_text().splitlines(keepends=True)
    (stages / "labels.jsonl").write_text("".join(labels[:-5]))
    for name in ("context", "cleaning", "rewriting"):
        (stages / f"{name}.jsonl").unlink()
    kept = [r for r in read_jsonl(stages / "rejects.jsonl")
            if r["stage"] in ("characters", "utterances")]
    (stages / "rejects.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    resumed = engine()
    pipeline.generate(config(tmp_path / "cut"), engine=resumed)
    asked = {tuple((r.stage, r.key, r.seed) for r in call) for call in ref_engine.calls}
    again = [tuple((r.stage, r.key, r.seed) for r in call) for call in resumed.calls]
    assert again and all(call in asked for call in again)
    assert {c[0][0] for c in again} == {"labels", "context", "cleaning", "rewriting"}
    assert dataset_files(tmp_path / "cut") == dataset_files(tmp_path / "ref")


KILL_SCRIPT = """
import functools, sys
from data_gen import pipeline
from data_gen.config import GenerateConfig
from data_gen.engine import ScriptedEngine, scripted_answer
from emopillars_jax.config import load_config
cfg = load_config(GenerateConfig, None, sys.argv[2:])
delay = float(sys.argv[1])
pipeline.generate(cfg, engine=ScriptedEngine(functools.partial(scripted_answer, malformed_every=7),
                                             delay=delay))
"""


def run_script(tmp_path, out, delay):
    script = tmp_path / "gen.py"
    script.write_text(KILL_SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(delay), f"out_dir={out}", *SMALL],
                            cwd=ROOT)


def test_sigkill_and_resume_gives_the_same_dataset(tmp_path):
    ref = config(tmp_path / "ref")
    pipeline.generate(ref, engine=engine())
    out = tmp_path / "killed"
    for n_kill in (1, 2):   # kill twice: during labels, then later in the run
        proc = run_script(tmp_path, out, delay=0.02)
        labels = out / "stages" / "labels.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            n = len(labels.read_text().splitlines()) if labels.exists() else 0
            if n >= 20 * n_kill:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "dataset").exists()
    proc = run_script(tmp_path, out, delay=0.0)
    assert proc.wait(timeout=120) == 0
    assert dataset_files(out) == dataset_files(tmp_path / "ref")
    for name in ("labels", "context", "rejects"):   # no duplicated keys in any stage file
        rows = read_jsonl(out / "stages" / f"{name}.jsonl")
        key = "id" if name == "rejects" else "utterance_id"
        assert len(rows) == len({r[key] for r in rows})


def test_cli_merge_stats_and_one_line_errors(tmp_path, capsys):
    from emopillars_jax import cli
    cfg_file = tmp_path / "gen.yaml"
    cfg_file.write_text(f"out_dir: {tmp_path / 'run'}\ncorpus: {{max_plots: 4}}\nprogress: false\n")
    cfg = load_config(GenerateConfig, cfg_file)
    for i in range(2):
        pipeline.generate(cfg, shard=i, num_shards=2, engine=engine())
    assert cli.main(["generate", "-c", str(cfg_file), "merge=true"]) == 0
    assert "contextless" in capsys.readouterr().out
    assert (tmp_path / "run" / "dataset" / "contextless" / "train.jsonl").stat().st_size
    # stats without the embedding part (that needs the MiniLM encoder: see test_gen_stats)
    from data_gen import stats
    out = stats.write_report(tmp_path / "run", embeddings=False)
    report = json.loads((out / "report.json").read_text())
    assert report["stages"]["labels"]["records"] == len(
        [1 for d in stats.stage_dirs(tmp_path / "run") for _ in read_jsonl(d / "labels.jsonl")])
    assert report["contextless"]["examples"] > 0
    n_rejects = sum(len(read_jsonl(d / "rejects.jsonl")) for d in stats.stage_dirs(tmp_path / "run"))
    assert sum(n for reasons in report["rejects"].values() for n in reasons.values()) == n_rejects
    assert (out / "label_distribution.png").read_bytes()[:4] == b"\x89PNG"
    # bad input: one line naming the file and the expectation
    bad = tmp_path / "empty.jsonl"
    bad.write_text("")
    assert cli.main(["generate", "-c", str(cfg_file), f"corpus.path={bad}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corpus is empty" in err
    assert cli.main(["generate", "-c", str(cfg_file), "llm.model=/no/such.gguf"]) == 1
    assert "neither a known asset" in capsys.readouterr().err
    assert cli.main(["stats", str(tmp_path / "nothing")]) == 1
