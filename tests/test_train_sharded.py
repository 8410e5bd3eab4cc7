"""Sharded steps on forced multi-device CPU meshes, a real two-process jax.distributed run,
and restoring a checkpoint onto a different device count (all in subprocesses)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_tiny as tt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKER = str(Path(__file__).resolve().parent / "train_tiny.py")


def run_worker(what, args, devices=1, env_extra=None, background=False):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), **(env_extra or {})}
    cmd = [sys.executable, WORKER, what, json.dumps(args)]
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f}


def test_one_device_and_eight_device_mesh_give_the_same_step(tmp_path):
    from emopillars_jax import data as D
    ex = D.read_examples(tt.write_emopillars(tmp_path / "t.jsonl", 16, 0), num_labels=28)
    enc = {0: D.encode(ex, tt.char_encode)}
    batch = next(D.TrainLoader(enc, total=16, num_shards=1, global_batch=8, seed=0,
                               boundaries=[16, 32], pad_id=0))
    np.savez(tmp_path / "batch.npz", **batch)
    out = tmp_path / "out.json"
    run_worker("mesh_step", {"batch": str(tmp_path / "batch.npz"), "out": str(out),
                             "shape": {"data": 4, "fsdp": 1, "tensor": 2}}, devices=8)
    res = json.loads(out.read_text())
    one, many = res["one"], res["many"]
    assert "P(None, 'tensor')" in many["specs"]       # really tensor-sharded
    assert one["specs"] == ["P()"]
    assert abs(one["loss"] - many["loss"]) < 1e-5
    import jax
    for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(many["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_process_distributed_run_matches_single_process(tmp_path):
    files = tt.write_dataset(tmp_path / "data", n_train=64, n_dev=16, n_test=8)
    overrides = {"data.num_shards": 2, "max_steps": 6, "checkpoint.every_steps": 3,
                 "eval.every_steps": 3}
    single = tmp_path / "single"
    run_worker("train", {"out_dir": str(single), "files": files, "overrides": overrides,
                         "npz": str(tmp_path / "single.npz")}, devices=2)
    port = free_port()
    multi = tmp_path / "multi"
    procs = [run_worker("train", {"out_dir": str(multi), "files": files, "overrides": overrides,
                                  "npz": str(tmp_path / "multi.npz"),
                                  "coordinator": f"localhost:{port}", "num_processes": 2,
                                  "process_id": i}, devices=1, background=True)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    a, b = npz(tmp_path / "single.npz"), npz(tmp_path / "multi.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=k)
    # each process tokenized only its half of the training set (plus the dev set)
    single_seen = json.loads((single / "tokenized_0.json").read_text())["encoded"]
    for i in range(2):
        seen = json.loads((multi / f"tokenized_{i}.json").read_text())
        assert seen["encoded"][0] == 32 and single_seen[:2] == [32, 32]
        assert seen["summary"]["step"] == 6
        # trained as `emopillars train` does on CPU: XLA on the calling thread (host_memory)
        assert seen["async_dispatch"] is False
    s = json.loads((single / "tokenized_0.json").read_text())["summary"]
    m = json.loads((multi / "tokenized_0.json").read_text())["summary"]
    assert s["best_dev_macro_f1"] == pytest.approx(m["best_dev_macro_f1"], abs=1e-6)


def test_checkpoint_from_eight_devices_restores_onto_two(tmp_path):
    files = tt.write_dataset(tmp_path / "data", n_train=32, n_dev=8, n_test=8)
    out = tmp_path / "run"
    run_worker("train", {"out_dir": str(out), "files": files,
                         "overrides": {"max_steps": 2, "mesh.shape": {"data": 4, "tensor": 2},
                                       "checkpoint.every_steps": 1},
                         "npz": str(tmp_path / "saved.npz")}, devices=8)
    res_path = tmp_path / "restored.json"
    run_worker("restore", {"out_dir": str(out), "shape": {"data": 1, "tensor": 2},
                           "npz": str(tmp_path / "restored.npz"), "out": str(res_path)},
               devices=2)
    res = json.loads(res_path.read_text())
    assert res["devices"] == 2 and res["step"] == 2 and res["num_devices"] == [2]
    assert "P(None, 'tensor')" in res["specs"]
    a, b = npz(tmp_path / "saved.npz"), npz(tmp_path / "restored.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
