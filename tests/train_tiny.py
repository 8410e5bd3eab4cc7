"""Test doubles for the training stack: a tiny NNX classifier with the encoder's call
signature and logical-axis metadata, a character tokenizer, and small labelled files.

Also a worker entry point, run in subprocesses (8 forced CPU devices, or two jax.distributed
processes): `python tests/train_tiny.py WHAT ARGS...`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

VOCAB = 64
# a few clearly separable "emotions" (taxonomy indices) with cue words
CUES = {17: ["happy", "glad", "delighted", "wonderful"], 25: ["sad", "tears", "cry", "lonely"],
        2: ["angry", "furious", "rage", "hate"], 14: ["afraid", "scared", "terrified", "dark"]}
FILLER = ["the", "day", "was", "a", "it", "and", "then", "we", "my", "friend", "house", "road"]


def tiny_model(num_labels: int = 28, seed: int = 0, dropout: float = 0.1):
    from flax import nnx
    import jax.numpy as jnp

    part = nnx.with_partitioning

    class Tiny(nnx.Module):
        def __init__(self, rngs):
            with nnx.use_eager_sharding(False):
                init = nnx.initializers.normal(0.2)
                self.embed = nnx.Embed(VOCAB, 16, embedding_init=part(init, ("vocab", "embed")),
                                       rngs=rngs)
                self.types = nnx.Embed(2, 16, embedding_init=part(init, (None, "embed")),
                                       rngs=rngs)
                self.norm = nnx.LayerNorm(16, scale_init=part(nnx.initializers.ones, ("embed",)),
                                          bias_init=part(nnx.initializers.zeros, ("embed",)),
                                          rngs=rngs)
                self.hidden = nnx.Linear(16, 32, kernel_init=part(init, ("embed", "mlp")),
                                         bias_init=part(nnx.initializers.zeros, ("mlp",)),
                                         rngs=rngs)
                self.out = nnx.Linear(32, num_labels, kernel_init=part(init, ("mlp", "labels")),
                                      bias_init=part(nnx.initializers.zeros, ("labels",)),
                                      rngs=rngs)
            self.drop = nnx.Dropout(dropout)
            self.dropout_rngs = nnx.Rngs(dropout=seed + 1)

        def __call__(self, input_ids, attention_mask, token_type_ids=None, *,
                     deterministic=True):
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = self.norm(self.embed(input_ids) + self.types(token_type_ids))
            m = attention_mask[..., None].astype(x.dtype)
            pooled = (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
            h = nnx.gelu(self.hidden(pooled))
            h = self.drop(h, deterministic=deterministic,
                          rngs=None if deterministic else self.dropout_rngs)
            return self.out(h).astype(jnp.float32)

    return Tiny(nnx.Rngs(seed))


def char_encode(text_a, text_b, max_length: int = 48):
    """Word-hash tokenizer: [CLS]=1 words [SEP]=2 (segment B after, token type 1)."""
    def words(t):
        return [3 + (sum(map(ord, w)) % (VOCAB - 3)) for w in t.split()]
    ids, types = [], []
    for i, a in enumerate(text_a):
        seq = [1] + words(a) + [2]
        typ = [0] * len(seq)
        if text_b is not None:
            b = [*words(text_b[i]), 2]
            seq, typ = seq + b, typ + [1] * len(b)
        ids.append(seq[:max_length])
        types.append(typ[:max_length])
    return ids, types


def bundle(seed: int = 0, dropout: float = 0.1):
    from emopillars_jax.training import ModelBundle
    return ModelBundle(tiny_model(seed=seed, dropout=dropout), char_encode, 0,
                       {"source": "tests/train_tiny.py"})


def sentence(rng, labels):
    words = list(rng.choice(FILLER, size=rng.integers(2, 9)))
    for lab in labels:
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(CUES[lab])))
    return " ".join(words)


def write_emopillars(path: Path, n: int, seed: int, contextual: bool = False) -> Path:
    """Records in the synthetic dataset's shape (utterance, labels, all_emotions_mapped...)."""
    from emopillars_jax.taxonomy import LABELS
    rng = np.random.default_rng(seed)
    keys = sorted(CUES)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i in range(n):
            labels = sorted(set(int(x) for x in rng.choice(keys, size=rng.integers(1, 3))))
            rec = {"utterance_id": f"u{i}", "plot_id": f"p{i % 7}", "character": "Ann",
                   "utterance": sentence(rng, labels), "labels": labels,
                   "all_emotions_mapped": [[LABELS[k], round(float(rng.uniform(0.5, 1)), 1)]
                                           for k in labels]}
            if contextual:
                rec["context"] = "In the " + " ".join(rng.choice(FILLER, size=5))
            f.write(json.dumps(rec) + "\n")
    return path


def write_dataset(folder: Path, n_train=96, n_dev=32, n_test=32, contextual=False) -> dict:
    return {split: str(write_emopillars(folder / f"{split}.jsonl", n, seed, contextual))
            for split, n, seed in (("train", n_train, 1), ("validation", n_dev, 2),
                                   ("test", n_test, 3))}


def tiny_config(out_dir, files: dict, **overrides):
    from emopillars_jax.config import build_config
    from emopillars_jax.train_config import TrainConfig
    data = {"out_dir": str(out_dir), "seed": 0, "epochs": 2, "batch_size": 8, "progress": False,
            "log_every": 1,
            "data": {"train": files["train"], "dev": files.get("validation"),
                     "test": files.get("test"), "max_length": 32, "bucket_boundaries": [8, 16]},
            "optim": {"lr": 3e-3, "warmup_ratio": 0.1},
            "checkpoint": {"every_steps": 4, "keep": 2, "async_save": True}}
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return build_config(TrainConfig, data)


def params_npz(params, path):
    import jax
    flat = {"/".join(str(getattr(k, "key", k)) for k in kp): np.asarray(v)
            for kp, v in jax.tree_util.tree_leaves_with_path(jax.device_get(params))}
    np.savez(path, **flat)


# ----------------------------------------------------------------------------- workers

def worker(argv):
    """Subprocess entry: argv[0] names the job, argv[1] a JSON of its arguments."""
    import faulthandler
    import logging
    import os
    if os.environ.get("TT_HANG_DUMP_S"):   # debugging aid: stacks of a hung worker
        faulthandler.dump_traceback_later(int(os.environ["TT_HANG_DUMP_S"]), exit=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import jax
    what, args = argv[0], json.loads(argv[1])
    if what == "mesh_step":
        # one identical training step on a 1-device mesh and on the given mesh
        from emopillars_jax import sharding as shd
        from emopillars_jax.training import Steps, build_optimizer
        cfg = tiny_config("unused", {"train": "unused"})
        batch = {k: np.asarray(v) for k, v in np.load(args["batch"]).items()}
        out = {}
        for name, devices, shape in (("one", jax.devices()[:1], {"data": 1}),
                                     ("many", jax.devices(), args["shape"])):
            mesh = shd.make_mesh(shape, devices)
            steps = Steps(tiny_model(), mesh, cfg.mesh.rules,
                          build_optimizer(cfg.optim, 10), seed=0)
            metrics = steps.train(batch, 0)
            metrics = steps.train(batch, 1)
            out[name] = {"loss": float(metrics["loss"]),
                         "params": jax.tree.map(lambda x: np.asarray(x).tolist(),
                                                jax.device_get(steps.params)),
                         "specs": sorted({str(s.spec) for s in
                                          jax.tree.leaves(steps.param_shardings)})}
        Path(args["out"]).write_text(json.dumps(out))
    elif what == "train":
        # a full training run (optionally jax.distributed), params saved as .npz
        from emopillars_jax.training import train
        if args.get("coordinator"):
            jax.distributed.initialize(args["coordinator"], args["num_processes"],
                                       args["process_id"])
        # as train() does when it loads the model itself (bundle() below starts JAX first)
        from emopillars_jax.host_memory import reuse_host_memory
        reuse_host_memory()
        cfg = tiny_config(args["out_dir"], args["files"], **args.get("overrides", {}))
        b = bundle()
        seen = []
        orig = b.encode_fn
        b.encode_fn = lambda a, t: (seen.append(len(a)), orig(a, t))[1]
        summary = train(cfg, b)
        from emopillars_jax.checkpointing import restore_params
        # collective: every process opens the manager
        params, _, step = restore_params(Path(args["out_dir"]) / "checkpoints", "latest")
        if jax.process_index() == 0:
            params_npz(params, args["npz"])
        Path(args["out_dir"], f"tokenized_{jax.process_index()}.json").write_text(
            json.dumps({"encoded": seen, "summary": summary,
                        "async_dispatch": jax.config.values["jax_cpu_enable_async_dispatch"]}))
    elif what == "restore":
        # restore a checkpoint onto this process's devices with a given mesh
        from emopillars_jax import sharding as shd
        from emopillars_jax.checkpointing import Checkpointer
        from emopillars_jax.training import Steps, build_optimizer
        cfg = tiny_config(args["out_dir"], {"train": "unused"})
        mesh = shd.make_mesh(args["shape"])
        steps = Steps(tiny_model(seed=5), mesh, cfg.mesh.rules,
                      build_optimizer(cfg.optim, 10), seed=0)
        ck = Checkpointer(Path(args["out_dir"]) / "checkpoints", every_steps=1)
        step, params, opt, data, meta = ck.restore(steps.params, steps.opt_state)
        ck.close()
        shardings = sorted({str(x.sharding.spec) for x in jax.tree.leaves(params)})
        params_npz(params, args["npz"])
        Path(args["out"]).write_text(json.dumps(
            {"step": step, "devices": jax.device_count(), "specs": shardings,
             "num_devices": sorted({len(x.sharding.device_set) for x in jax.tree.leaves(params)})}))
    else:
        raise SystemExit(f"unknown job {what}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    worker(sys.argv[1:])
