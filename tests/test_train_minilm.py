"""A short real fine-tune of the packaged MiniLM through `emopillars train` / `evaluate`."""
import json
from pathlib import Path

import numpy as np
import optax
import yaml

from emopillars_jax import cli
from emopillars_jax.taxonomy import LABEL_TO_ID

PHRASES = {
    "joy": ["I am so happy today", "this is the best day of my life", "we laughed and danced",
            "what a wonderful gift", "I feel great and cheerful", "everything went perfectly"],
    "sadness": ["I miss her so much", "I cried all night", "everything feels empty and grey",
                "my heart is broken", "I feel so lonely and down", "nobody came to say goodbye"],
    "anger": ["I am furious with you", "how dare they lie to me", "this makes my blood boil",
              "I want to scream at him", "stop shouting at me you idiot",
              "they cheated and I am livid"],
    "fear": ["I am terrified of the dark", "something is following me", "I am scared to go in",
             "my hands shake with dread", "what if the monster comes back",
             "please don't leave me alone here"],
}
OPENERS = ["", "Honestly, ", "Oh, ", "Right now ", "Tonight "]


def write(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def make_data(folder: Path):
    rng = np.random.default_rng(0)
    rows = {"train": [], "dev": []}
    for label, phrases in PHRASES.items():   # dev: the same phrases in unseen framings
        for p in phrases:
            for split, openers in (("train", OPENERS[:3]), ("dev", OPENERS[3:])):
                for o in openers:
                    rows[split].append({"utterance": f"{o}{p}.", "labels": [LABEL_TO_ID[label]],
                                        "all_emotions_mapped": [[label, 0.9]]})
    for split in rows:
        rng.shuffle(rows[split])
    return {s: write(folder / f"{s}.jsonl", r) for s, r in rows.items()}


def test_minilm_fine_tune_beats_untrained_head(tmp_path, capsys):
    files = make_data(tmp_path)
    cfg_path = tmp_path / "train.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "run"), "epochs": 6, "batch_size": 8, "progress": False,
        "model": {"path": "minilm-l6", "dropout": 0.0},
        "data": {"train": files["train"], "dev": files["dev"], "test": files["dev"],
                 "max_length": 32, "bucket_boundaries": [16, 32]},
        "optim": {"lr": 1e-4, "warmup_ratio": 0.0, "head_lr_multiplier": 30,
                  "schedule": "constant"},
        "checkpoint": {"every_steps": 100, "keep": 1}}))

    # the untrained head, scored the same way (threshold swept on dev)
    from emopillars_jax import sharding as shd
    from emopillars_jax.config import load_config
    from emopillars_jax.train_config import TrainConfig
    from emopillars_jax.training import Steps, bucket_boundaries, dev_selection, load_bundle, \
        read_split
    from emopillars_jax import data as D
    cfg = load_config(TrainConfig, cfg_path)
    bundle = load_bundle(cfg)
    steps = Steps(bundle.model, shd.make_mesh(cfg.mesh.shape), cfg.mesh.rules, optax.identity(),
                  seed=0)
    dev = D.encode(read_split(cfg, cfg.data.dev), bundle.encode_fn)
    probs = steps.predict(dev, 8, bucket_boundaries(cfg), bundle.pad_id)
    _, before = dev_selection(cfg, dev.targets, probs)
    del steps, bundle

    assert cli.main(["train", "--config", str(cfg_path), "optim.weight_decay=0.01"]) == 0
    run = tmp_path / "run"
    report = json.loads((run / "eval" / "eval.json").read_text())
    after = report["dev"]["macro_f1"]
    assert after > before["macro_f1"] + 0.2, (before["macro_f1"], after)
    assert report["test"]["thresholds"] == report["dev"]["thresholds"]   # chosen on dev only
    for name in ("eval.md", "per_class_f1.png", "training_curves.png"):
        assert (run / "eval" / name).is_file()
    assert list((run / "tb").iterdir())   # TensorBoard event file

    capsys.readouterr()
    assert cli.main(["evaluate", "--config", str(cfg_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["dev"]["macro_f1"] - after) < 1e-6
    assert (Path(out["out"]) / "eval.md").is_file()


def test_bf16_compute_keeps_fp32_master_weights_and_loss():
    from emopillars_jax import sharding as shd
    from emopillars_jax.config import build_config
    from emopillars_jax.train_config import TrainConfig
    from emopillars_jax.training import Steps, build_optimizer, load_bundle
    cfg = build_config(TrainConfig, {"model": {"path": "minilm-l6", "dtype": "bfloat16"},
                                     "data": {"train": "x", "max_length": 16},
                                     "optim": {"warmup_ratio": 0.0}})
    bundle = load_bundle(cfg)
    steps = Steps(bundle.model, shd.make_mesh({"data": -1}), cfg.mesh.rules,
                  build_optimizer(cfg.optim, 10), seed=0)
    ids, types = bundle.encode_fn(["I am so happy", "this is awful"], None)
    from emopillars_jax.data import Encoded, pad_batch
    targets = np.zeros((2, 28), np.float32)
    targets[0, 17] = targets[1, 11] = 1
    batch = pad_batch(Encoded(ids, types, targets, np.arange(2)), [0, 1], 16, bundle.pad_id)
    before = np.asarray(steps.params["head"]["classifier"]["kernel"]).copy()
    metrics = steps.train(batch, 0)
    import jax
    assert metrics["loss"].dtype == np.float32 and np.isfinite(float(metrics["loss"]))
    assert {x.dtype for x in jax.tree.leaves(steps.params)} == {np.dtype("float32")}
    assert {x.dtype for x in jax.tree.leaves(steps.opt_state) if x.ndim} == {np.dtype("float32")}
    assert not np.array_equal(before, np.asarray(steps.params["head"]["classifier"]["kernel"]))
