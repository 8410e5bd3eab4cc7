"""Exact resume: SIGTERM -> final save -> resume equals an uninterrupted run; a corrupted
latest checkpoint is skipped for the previous one with a warning."""
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_tiny as tt  # noqa: E402

from emopillars_jax.checkpointing import restore_params  # noqa: E402
from emopillars_jax.errors import EmoPillarsError  # noqa: E402
from emopillars_jax.training import evaluate, train  # noqa: E402


def final_params(out_dir):
    params, meta, step = restore_params(Path(out_dir) / "checkpoints", "latest")
    return jax.tree.map(np.asarray, params), meta, step


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)


def test_sigterm_then_resume_equals_uninterrupted_and_corrupt_latest_is_skipped(
        tmp_path, caplog, monkeypatch):
    files = tt.write_dataset(tmp_path / "data", n_train=48, n_dev=16, n_test=8)
    overrides = {"epochs": 2, "checkpoint.every_steps": 4, "optim.grad_accum": 2}
    ref = train(tt.tiny_config(tmp_path / "ref", files, **overrides), tt.bundle())
    assert ref["status"] == "finished" and ref["step"] == 24
    ref_params, ref_meta, _ = final_params(tmp_path / "ref")

    # the same out_dir with another training set or head: refused, the checkpoints kept
    kept = sorted(p.name for p in (tmp_path / "ref" / "checkpoints").iterdir())
    for key, value in (("data.train", files["validation"]), ("model.num_labels", 7)):
        cfg = tt.tiny_config(tmp_path / "ref", files, **overrides, **{key: value})
        with pytest.raises(EmoPillarsError, match=rf"checkpoints of another run \({key} "):
            train(cfg, tt.bundle())
    with pytest.raises(EmoPillarsError, match=r"checkpoints of another model \(model.num_labels"):
        evaluate(cfg, tt.bundle())
    # another optimizer structure: no step restores, and none is taken for corrupt
    cfg = tt.tiny_config(tmp_path / "ref", files, **{**overrides, "optim.grad_accum": 1})
    with pytest.raises(EmoPillarsError, match="no checkpoint restores into this run"):
        train(cfg, tt.bundle())
    assert sorted(p.name for p in (tmp_path / "ref" / "checkpoints").iterdir()) == kept
    with monkeypatch.context() as m:   # the same files, named from another folder: same run
        m.chdir(tmp_path / "data")
        relative = {split: os.path.basename(path) for split, path in files.items()}
        again = train(tt.tiny_config(tmp_path / "ref", relative, **overrides), tt.bundle())
    assert again["status"] == "finished" and again["step"] == 24

    def preempt_at_11(step):   # mid gradient accumulation
        if step == 11:
            os.kill(os.getpid(), signal.SIGTERM)   # what a cluster sends before preemption

    run = tmp_path / "run"
    first = train(tt.tiny_config(run, files, **overrides), tt.bundle(), on_step=preempt_at_11)
    assert first["status"] == "preempted" and first["step"] == 11
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert 11 in steps and 8 in steps

    # keep a copy to test the corrupted-latest fallback afterwards
    shutil.copytree(run, tmp_path / "run_copy")
    second = train(tt.tiny_config(run, files, **overrides), tt.bundle(seed=9))
    assert second["status"] == "finished" and second["step"] == 24
    params, meta, _ = final_params(run)
    assert_same(ref_params, params)
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    loss_steps = [h["step"] for h in history if "loss" in h]
    assert loss_steps == sorted(set(loss_steps)) == list(range(1, 25))
    assert meta["best_dev_macro_f1"] == ref_meta["best_dev_macro_f1"]
    assert (run / "eval" / "eval.md").is_file() and (run / "eval" / "per_class_f1.png").is_file()

    # corrupt the latest (step 11) of the copy: resume falls back to step 8, still exact
    copy = tmp_path / "run_copy"
    for f in (copy / "checkpoints" / "11" / "params").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        third = train(tt.tiny_config(copy, files, **overrides), tt.bundle(seed=9))
    assert any("unreadable" in r.getMessage() and "/11" in r.getMessage() for r in caplog.records)
    assert (copy / "checkpoints" / "11.corrupt").is_dir()
    assert third["status"] == "finished" and third["step"] == 24
    assert_same(ref_params, final_params(copy)[0])
