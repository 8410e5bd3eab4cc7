"""The paper's downstream protocol, one command per benchmark.

    (a) train a student on the synthetic data            (`emopillars train`, then export)
    (b) fine-tune it on a benchmark, starting from (a)   run_benchmark(name, init_from=(a))
    baseline: fine-tune the plain encoder the same way   (the config's model.path)

For each benchmark the runner reads the official files (adapters.py), writes them as JSON
Lines the trainer reads (`text`, `labels`, `label_names`, optional `context`), trains
each variant (and each fold for ISEAR's 5-fold cross-validation) through `train_fn`,
scores the dev predictions with the benchmark's own metric (metrics.py), and writes per
run and per variant a results table (metric, threshold, per-class F1) plus the
comparison of (b) with the baseline (markdown, JSON and a PNG).

The label space follows the config: model.num_labels 28 maps the benchmark's labels into
the 28-class head (taxonomy.BENCHMARK_LABEL_MAPS); the benchmark's own class count trains
a new head of that size.

`train_fn(cfg: TrainConfig) -> dict` is the training step (default: the project's trainer,
training_stack_train_fn). It must return `dev_probs` (an [N, num_labels] array of sigmoid
probabilities for the records of cfg.data.dev, in file order) and may return `threshold`
(chosen on dev; else the runner sweeps it) and `train_seconds`. With eval.calibration it
is called as train_fn(cfg, predict_files=[held-out file]) and also returns `predicted`,
the probabilities for each of those files. A finished run leaves
dev_probs.npy and results.json in its folder; re-running the command does not train it
again but re-scores those probabilities under the current config (e.g. another
eval.prior_shift). An interrupted run resumes from its checkpoints.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, EmoPillarsError, NotBuiltError
from ..taxonomy import BENCHMARK_LABEL_MAPS, NUM_LABELS
from . import adapters as A

TrainFn = Callable[..., dict]


@dataclass(frozen=True)
class Benchmark:
    name: str
    files: dict[str, str]          # split -> file name inside the source folder
    task: str                      # "multi" (threshold) or "single" (argmax over its classes)
    metric: str                    # headline metric key in the results
    folds: int = 0                 # >0: k-fold cross-validation over the "all" split
    dev_filter: Callable[[dict], bool] | None = None   # "all" split -> (train, dev) by record
    readers_kw: dict = field(default_factory=dict)


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("goemotions", {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
              "multi", "macro_f1"),
    Benchmark("isear", {"all": "isear.csv"}, "single", "macro_f1", folds=5),
    Benchmark("emocontext", {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"},
              "single", "emocontext_f1"),
    Benchmark("meld", {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv",
                       "test": "test_sent_emo.csv"}, "single", "weighted_f1"),
    # Sessions 1-4 train, Session 5 is held out (the usual speaker-independent split)
    Benchmark("iemocap", {"all": "."}, "single", "weighted_f1",
              dev_filter=lambda r: r["id"].startswith("Ses05")),
)}

READERS = {"goemotions": A.read_goemotions, "isear": A.read_isear,
           "emocontext": A.read_emocontext, "meld": A.read_meld, "iemocap": A.read_iemocap}


def get(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise EmoPillarsError(f"unknown benchmark {name!r}: expected one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


def default_source(name: str) -> Path:
    """`data/<name>` (where `emopillars data download` puts files), the usual place."""
    return Path("data") / name


def label_space_for(name: str, num_labels: int) -> str:
    """The label space a config's head size asks for."""
    native = len(A.class_names(name, "native"))
    if num_labels == NUM_LABELS:
        return "taxonomy"
    if num_labels == native:
        return "native"
    raise ConfigError(f"model.num_labels={num_labels}: for {name} expected {NUM_LABELS} "
                      f"(map into the 28-class head) or {native} (its own classes)")


TFDS_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def is_tfds(source) -> bool:
    """`tfds` or `tfds:DATA_DIR`: read GoEmotions through tensorflow-datasets."""
    return str(source) == "tfds" or str(source).startswith("tfds:")


def read_split(name: str, source: Path | str, split: str, label_space: str) -> list[dict]:
    bench = get(name)
    if is_tfds(source):
        if name != "goemotions":
            raise EmoPillarsError(f"{name}: only goemotions can be read through "
                                  "tensorflow-datasets")
        data_dir = str(source).partition(":")[2] or None
        return A.read_goemotions_tfds(TFDS_SPLITS[split], data_dir, label_space)
    source = Path(source)
    path = source if bench.files.get(split) == "." else source / bench.files[split]
    return READERS[name](path, label_space=label_space)


# --- data preparation --------------------------------------------------------------------
@dataclass
class PreparedRun:
    name: str            # "main" or "fold0".."fold4"
    train: Path
    dev: Path
    calibration: Path | None = None   # held out of train to calibrate the posteriors


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Atomic: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def prepare(name: str, source: str | Path, out: str | Path, label_space: str = "taxonomy",
            folds: int | None = None, seed: int = 0, log=print) -> list[PreparedRun]:
    """Read a benchmark's files and write the JSON Lines the trainer reads.

    Writes OUT/labels.json (the head's classes) and OUT/{train,dev[,test]}.jsonl, or
    OUT/fold<k>/{train,dev}.jsonl for cross-validation. Returns the runs to train.
    """
    bench, out = get(name), Path(out)
    source = source if is_tfds(source) else Path(source)
    if not is_tfds(source) and not source.exists():
        hint = (" (fetch it with `emopillars data download goemotions`)"
                if name == "goemotions" else "")
        raise EmoPillarsError(f"{source}: {name} data folder not found{hint}")
    classes = A.class_names(name, label_space)
    # everything is read (and checked) before anything is written: a failure leaves no output
    files: dict[Path, list[dict]] = {}
    runs, messages = [], []
    if "all" in bench.files:
        records = read_split(name, source, "all", label_space)
        k = folds if folds is not None else bench.folds
        if k:
            for f, (tr, te) in enumerate(A.cv_folds(records, k, seed)):
                d = out / f"fold{f}"
                files[d / "train.jsonl"] = [records[i] for i in tr]
                files[d / "dev.jsonl"] = [records[i] for i in te]
                runs.append(PreparedRun(f"fold{f}", d / "train.jsonl", d / "dev.jsonl"))
            messages.append(f"{name}: {len(records)} records -> {k} folds in {out}")
        else:
            if bench.dev_filter is None:
                raise EmoPillarsError(f"{name}: give folds >= 2 (one file, no fixed dev split)")
            dev = [r for r in records if bench.dev_filter(r)]
            train = [r for r in records if not bench.dev_filter(r)]
            if not dev or not train:
                raise EmoPillarsError(f"{source}: {name} needs both training and held-out "
                                      f"records, got {len(train)} and {len(dev)}")
            files[out / "train.jsonl"], files[out / "dev.jsonl"] = train, dev
    else:
        for split in bench.files:
            if split == "test" and not is_tfds(source) and \
                    not (source / bench.files[split]).is_file():
                continue   # test splits are often withheld
            path = out / f"{split}.jsonl"
            files[path] = read_split(name, source, split, label_space)
            messages.append(f"{name}/{split}: {len(files[path])} records -> {path}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels.json").write_text(json.dumps(
        {"benchmark": name, "label_space": label_space, "classes": classes}, indent=1))
    for path, records in files.items():
        write_jsonl(path, records)
    for message in messages:
        log(message)
    return runs or [PreparedRun("main", out / "train.jsonl", out / "dev.jsonl")]


def hold_out_calibration(run: PreparedRun, fraction: float, seed: int) -> PreparedRun:
    """The run with `fraction` of its training records (stratified) held out for posterior
    calibration: writes train_fit.jsonl and calibration.jsonl beside train.jsonl."""
    records = read_jsonl(run.train)
    keep, held = A.holdout_split(records, fraction, seed)
    if not held:
        raise EmoPillarsError(f"{run.train}: too few records to hold out a calibration set "
                              f"(eval.calibration_fraction={fraction})")
    fit, cal = run.train.with_name("train_fit.jsonl"), run.train.with_name("calibration.jsonl")
    write_jsonl(fit, [records[i] for i in keep])
    write_jsonl(cal, [records[i] for i in held])
    return PreparedRun(run.name, fit, run.dev, cal)


def subsample_train(run: PreparedRun, n: int, seed: int) -> PreparedRun:
    """The run with its training records replaced by a seeded random sample of n of them
    (file order kept), written beside train.jsonl."""
    import random
    records = read_jsonl(run.train)
    if n > len(records):
        raise EmoPillarsError(f"{run.train}: {len(records)} training records, cannot sample {n}")
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    sample = run.train.with_name(f"train_n{n}_seed{seed}.jsonl")
    write_jsonl(sample, [records[i] for i in keep])
    return PreparedRun(run.name, sample, run.dev, run.calibration)


# --- scoring -----------------------------------------------------------------------------
def evaluated_classes(name: str, label_space: str) -> tuple[list[int], list[str]]:
    """Head indices the benchmark is scored on, and a display name for each."""
    classes = A.class_names(name, label_space)
    encode = A.label_encoder(name, label_space)
    ids: dict[int, list[str]] = {}
    for bench_name in BENCHMARK_LABEL_MAPS[name]:
        ids.setdefault(encode([bench_name], name, None)[0], []).append(bench_name)
    names = []
    for i, src in ids.items():
        shown = "/".join(src)
        names.append(shown if shown == classes[i] else f"{shown} ({classes[i]})")
    return list(ids), names


def check_decision_rule(name: str, prior_shift: str, calibration: str) -> None:
    """Refuse eval.prior_shift / eval.calibration values the benchmark cannot use."""
    if prior_shift not in ("none", "em"):
        raise ConfigError(f"eval.prior_shift={prior_shift!r}: expected none or em")
    if calibration not in ("none", "temperature", "bcts"):
        raise ConfigError(f"eval.calibration={calibration!r}: expected none, temperature "
                          "or bcts")
    if get(name).task == "multi":
        for key, value in (("prior_shift", prior_shift), ("calibration", calibration)):
            if value != "none":
                raise ConfigError(f"eval.{key}={value}: {name} is multi-label (one threshold "
                                  f"per class set); it applies to single-label benchmarks")


def score(name: str, label_space: str, records: list[dict], probs, threshold: float | None,
          *, prior_shift: str = "none", train_records: list[dict] | None = None,
          calibration: str = "none", calibration_records: list[dict] | None = None,
          calibration_probs=None) -> dict:
    """The benchmark's scores for dev `records` given the head's probabilities.

    Single-label benchmarks only: calibration "temperature" or "bcts" first maps the
    scores of the benchmark's classes to posteriors calibrated on `calibration_records`
    (held out of train, with their predicted `calibration_probs`; metrics.fit_calibration).
    prior_shift "em" then adjusts the dev posteriors to dev class priors re-estimated by EM
    from the unlabelled dev predictions and the class frequencies of `train_records`
    (metrics.em_prior_adjust). The plain argmax score is kept in the result as
    `value_without_prior_shift`."""
    import numpy as np

    from . import metrics as M
    bench = get(name)
    classes = A.class_names(name, label_space)
    ids, names = evaluated_classes(name, label_space)
    probs = M.check_probs(probs, len(records), len(classes), f"{name} dev probabilities")
    gold = M.multi_hot([r["labels"] for r in records], len(classes))

    def scored(pred, decision, threshold=None) -> dict:
        result = {"benchmark": name, "label_space": label_space, "n_examples": len(records),
                  "decision": decision, "threshold": threshold,
                  **M.scores(gold, pred, ids, names)}
        if name == "emocontext":
            pred_sets = [list(map(int, row.nonzero()[0])) for row in pred]
            result["emocontext_f1"] = M.emocontext_f1([r["labels"] for r in records],
                                                      pred_sets, classes)
        result["metric"], result["value"] = bench.metric, result[bench.metric]
        return result

    check_decision_rule(name, prior_shift, calibration)
    if bench.task == "multi":
        if threshold is None:
            threshold, _ = M.sweep_threshold(gold, probs, ids)
        return scored(M.threshold_predictions(probs, threshold), "threshold", threshold)
    # one label per example: the most probable benchmark class
    plain = scored(M.argmax_predictions(probs, ids), "argmax")
    if prior_shift == "none" and calibration == "none":
        return plain
    posteriors, steps, extra = probs[:, ids], [], {}
    if calibration != "none":
        if not calibration_records or calibration_probs is None:
            raise EmoPillarsError(f"{name}: eval.calibration={calibration} needs held-out "
                                  "training records and their predictions")
        cal = M.check_probs(calibration_probs, len(calibration_records), len(classes),
                            f"{name} calibration probabilities")
        column = {c: j for j, c in enumerate(ids)}
        # records without a scored class (e.g. IEMOCAP's skipped labels) say nothing here
        rows = [i for i, r in enumerate(calibration_records)
                if r["labels"] and r["labels"][0] in column]
        gold_cal = np.array([column[calibration_records[i]["labels"][0]] for i in rows])
        params = M.fit_calibration(M.class_logits(cal[rows][:, ids]), gold_cal, calibration)
        posteriors = M.apply_calibration(M.class_logits(probs[:, ids]), params)
        steps.append(f"{calibration} calibration")
        extra["calibration"] = {**params, "biases": dict(zip(names, params["biases"]))}
    if prior_shift == "em":
        if not train_records:
            raise EmoPillarsError(f"{name}: eval.prior_shift=em needs the training records")
        counts = M.multi_hot([r["labels"] for r in train_records], len(classes))[:, ids].sum(0)
        train_priors = (counts + 1) / (counts.sum() + len(ids))
        posteriors, dev_priors = M.em_prior_adjust(posteriors, train_priors)
        steps.append("EM prior adjustment")
        extra.update(train_priors=dict(zip(names, map(float, train_priors))),
                     estimated_dev_priors=dict(zip(names, map(float, dev_priors))))
    pred = np.zeros(probs.shape, dtype=bool)
    pred[np.arange(len(pred)), np.asarray(ids)[posteriors.argmax(1)]] = True
    return {**scored(pred, "argmax after " + " and ".join(steps)),
            "value_without_prior_shift": plain["value"], **extra}


def _mean_of(values: list):
    """Mean of fold values: numbers averaged, dicts key by key, anything else from fold 0."""
    first = values[0]
    if isinstance(first, dict):
        return {k: _mean_of([v[k] for v in values]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.fmean(values)
    return first


def aggregate(results: list[dict]) -> dict:
    """Mean (and standard deviation) over cross-validation folds."""
    if len(results) == 1:
        return dict(results[0])
    out = dict(results[0])
    out["run"] = f"mean of {len(results)} folds"
    if len({r.get("checkpoint_step") for r in results}) > 1:
        out["checkpoint_step"] = None   # the folds stopped at different steps
    # each fold fits its own calibration and estimates its own dev priors: report their means
    for key in ("calibration", "train_priors", "estimated_dev_priors"):
        if all(r.get(key) for r in results):
            out[key] = _mean_of([r[key] for r in results])
    for key in ("value", "macro_f1", "micro_f1", "weighted_f1", "emocontext_f1",
                "value_without_prior_shift", "train_seconds"):
        vals = [r[key] for r in results if r.get(key) is not None]
        if vals:
            out[key] = statistics.fmean(vals)
            out[f"{key}_std"] = statistics.pstdev(vals)
    out["per_class_f1"] = {k: statistics.fmean(r["per_class_f1"][k] for r in results)
                           for k in results[0]["per_class_f1"]}
    out["support"] = {k: sum(r["support"][k] for r in results) for k in results[0]["support"]}
    out["n_examples"] = sum(r["n_examples"] for r in results)
    out["folds"] = len(results)
    thresholds = [r["threshold"] for r in results if r.get("threshold") is not None]
    out["threshold"] = statistics.fmean(thresholds) if thresholds else None
    return out


# --- reports -----------------------------------------------------------------------------
def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def comparison_markdown(name: str, variants: dict[str, dict]) -> str:
    """Side-by-side table of the variants (e.g. finetuned vs baseline), with deltas."""
    cols = list(variants)
    head = variants[cols[0]]
    delta = len(cols) == 2
    lines = [f"# {name}: {' vs '.join(cols)}", "",
             "| | " + " | ".join(cols) + (f" | {cols[0]} - {cols[1]}" if delta else "") + " |",
             "|---|" + "---|" * (len(cols) + delta)]

    def row(label, key=None, per_class=None):
        vals = [(v["per_class_f1"].get(per_class) if per_class else v.get(key))
                for v in variants.values()]
        d = (f" | {vals[0] - vals[1]:+.4f}" if delta and None not in vals else
             (" | -" if delta else ""))
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in vals) + d + " |")

    row(f"**{head['metric']}** (headline)", "value")
    for key in ("macro_f1", "micro_f1", "weighted_f1"):
        if key != head["metric"]:
            row(key, key)
    lines.append("| threshold | " + " | ".join(_fmt(v.get("threshold")) for v in
                                               variants.values()) + (" | |" if delta else " |"))
    for cls in head["per_class_f1"]:
        row(f"F1 {cls}", per_class=cls)
    return "\n".join(lines) + "\n"


def plot_comparison(name: str, variants: dict[str, dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    classes = list(next(iter(variants.values()))["per_class_f1"])
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(classes) + 2), 4))
    for k, (variant, res) in enumerate(variants.items()):
        xs = [i + k * width for i in range(len(classes))]
        ax.bar(xs, [res["per_class_f1"][c] for c in classes], width,
               label=f"{variant} ({res['metric']} {res['value']:.3f})")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(classes))])
    ax.set_xticklabels(classes, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("F1 (dev)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{name}: per-class F1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_probs(path: Path, probs) -> None:
    import numpy as np
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npy")
    np.save(tmp, np.asarray(probs, np.float32))
    os.replace(tmp, path)


def write_results(folder: Path, result: dict, title: str) -> None:
    from ..hub import render_results_table
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".results.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    (folder / "results.md").write_text(f"# {title}\n\n{render_results_table(result)}")
    os.replace(tmp, folder / "results.json")   # last: its presence marks the run done


# --- the training step -------------------------------------------------------------------
def training_stack_train_fn(dev_during_training: bool = True) -> TrainFn:
    """The project's trainer (emopillars_jax.training, issue #5) as a train_fn.

    Trains (resuming from the run's checkpoints when they exist), then predicts the dev
    file with the checkpoint eval.checkpoint names (best | latest | a step); the runner
    sweeps the threshold on those probabilities. With dev_during_training=False the
    trainer does not see the dev file (no dev curve, no best-by-dev checkpoint), which
    saves two dev predictions per run when only the final checkpoint is scored.
    """
    try:
        from .. import training
    except ImportError as exc:
        raise NotBuiltError(f"the benchmark training step needs emopillars_jax.training "
                            f"(issue #5), which cannot be imported ({exc}); the prepared data "
                            f"can be trained on with `emopillars train -c CONFIG "
                            f"data.train=... data.dev=...`") from None

    def train_fn(cfg, predict_files=()) -> dict:
        import optax

        from .. import data as data_lib
        from .. import sharding as shd
        from ..checkpointing import restore_params
        start = time.perf_counter()
        summary = training.train(cfg if dev_during_training else
                                 cfg.model_copy(update={"data": cfg.data.model_copy(
                                     update={"dev": None})}))
        seconds = time.perf_counter() - start
        if summary.get("status") != "finished":
            raise EmoPillarsError(f"{cfg.out_dir}: training stopped ({summary.get('status')}); "
                                  "re-run the same command to resume")
        bundle = training.load_bundle(cfg)
        steps = training.Steps(bundle.model, shd.make_mesh(cfg.mesh.shape), cfg.mesh.rules,
                               optax.identity(), seed=cfg.seed)
        params, _, step = restore_params(Path(cfg.out_dir) / "checkpoints",
                                         cfg.eval.checkpoint, steps.param_shardings)
        def predict(path):
            examples = data_lib.encode(training.read_split(cfg, str(path)), bundle.encode_fn)
            return steps.predict(examples, cfg.eval.batch_size or cfg.batch_size,
                                 training.bucket_boundaries(cfg), bundle.pad_id, params,
                                 progress=cfg.progress and Path(path).stem)
        return {"dev_probs": predict(cfg.data.dev), "train_seconds": seconds,
                "checkpoint_step": step, "predicted": [predict(p) for p in predict_files]}
    return train_fn


def run_benchmark(name: str, init_from: str | None = None, *, config: str | Path | None = None,
                  overrides: list[str] | tuple = (), source: str | Path | None = None,
                  out_dir: str | Path | None = None, baseline: bool = True,
                  folds: int | None = None, train_fn: TrainFn | None = None,
                  train_subset: tuple[int, int] | None = None, log=print) -> dict:
    """Fine-tune from `init_from` (b) and/or the config's encoder (baseline); compare.

    `init_from`: the exported Hugging Face folder of the student trained on the synthetic
    data (step a). `train_subset` (n, seed): every variant trains on the same seeded
    sample of n training records (a learning curve). Returns {"variants": {variant:
    aggregated result}, "out_dir": ...}.
    """
    from ..config import load_config
    from ..train_config import TrainConfig
    bench = get(name)
    cfg = load_config(TrainConfig, config or Path("configs") / f"finetune_{name}.yaml", overrides)
    label_space = label_space_for(name, cfg.model.num_labels)
    out = Path(out_dir or cfg.out_dir)
    # refused before any training, not after it
    check_decision_rule(name, cfg.eval.prior_shift, cfg.eval.calibration)
    runs = prepare(name, source or default_source(name), out / "data", label_space,
                   folds=folds, seed=cfg.seed, log=log)
    if train_subset:
        runs = [subsample_train(run, *train_subset) for run in runs]
    if cfg.eval.calibration != "none":
        runs = [hold_out_calibration(run, cfg.eval.calibration_fraction, cfg.seed)
                for run in runs]
    variants = {}
    if init_from:
        variants["finetuned"] = str(init_from)
    if baseline:
        variants["baseline"] = cfg.model.path
    if not variants:
        raise EmoPillarsError("nothing to run: give init_from (step b) and/or keep the baseline")
    train_fn = train_fn or training_stack_train_fn()

    def records(path):   # as the trainer reads them: data.max_examples keeps the first N
        return read_jsonl(path)[:cfg.data.max_examples]
    summary = {}
    for variant, model_path in variants.items():
        fold_results = []
        for run in runs:
            run_dir = out / variant / run.name
            done, probs_file = run_dir / "results.json", run_dir / "dev_probs.npy"
            cal_file = run_dir / "calibration_probs.npy"
            earlier = json.loads(done.read_text()) if done.is_file() else None
            trained_seconds = None   # a re-prediction keeps the time of the training run
            if earlier and earlier.get("checkpoint", "best") != cfg.eval.checkpoint:
                # predicted from another checkpoint: predict again (training resumes at its end)
                log(f"{name} {variant} {run.name}: predicting with the "
                    f"{cfg.eval.checkpoint} checkpoint (was {earlier.get('checkpoint', 'best')})")
                trained_seconds, earlier = earlier.get("train_seconds"), None
            if earlier:
                if not probs_file.is_file():
                    log(f"{name} {variant} {run.name}: done earlier, {done}")
                    fold_results.append(earlier)
                    continue
                # trained earlier: score its saved probabilities under this config
                import numpy as np
                outcome = {"dev_probs": np.load(probs_file),
                           "threshold": earlier.get("threshold"),
                           "train_seconds": earlier.get("train_seconds"),
                           "checkpoint_step": earlier.get("checkpoint_step")}
                if run.calibration:
                    if not cal_file.is_file():
                        raise EmoPillarsError(
                            f"{run_dir}: trained without a held-out calibration split; "
                            "eval.calibration needs a new training run (move that folder "
                            "away) or eval.calibration=none")
                    outcome["calibration_probs"] = np.load(cal_file)
                log(f"{name} {variant} {run.name}: trained earlier, re-scoring {probs_file}")
            else:
                run_cfg = cfg.model_copy(deep=True)
                run_cfg.out_dir = str(run_dir / "train")
                run_cfg.model.path = model_path
                run_cfg.data.train, run_cfg.data.dev, run_cfg.data.test = (
                    str(run.train), str(run.dev), None)
                log(f"{name} {variant} {run.name}: training from {model_path}")
                start = time.perf_counter()
                outcome = (train_fn(run_cfg, predict_files=[run.calibration])
                           if run.calibration else train_fn(run_cfg))
                outcome.setdefault("train_seconds", time.perf_counter() - start)
                if trained_seconds is not None:
                    outcome["train_seconds"] = trained_seconds
                # kept so the run can be re-scored (another decision rule) without training
                if run.calibration:
                    outcome["calibration_probs"] = outcome["predicted"][0]
                    save_probs(cal_file, outcome["calibration_probs"])
                save_probs(probs_file, outcome["dev_probs"])
            result = score(name, label_space, records(run.dev), outcome["dev_probs"],
                           outcome.get("threshold") if bench.task == "multi" else None,
                           prior_shift=cfg.eval.prior_shift,
                           train_records=(records(run.train)
                                          if cfg.eval.prior_shift != "none" else None),
                           calibration=cfg.eval.calibration,
                           calibration_records=(records(run.calibration)
                                                if run.calibration else None),
                           calibration_probs=outcome.get("calibration_probs"))
            result.update(variant=variant, run=run.name, model=model_path,
                          train_seconds=outcome["train_seconds"],
                          checkpoint=cfg.eval.checkpoint,
                          checkpoint_step=outcome.get("checkpoint_step"))
            write_results(run_dir, result, f"{name} {variant} {run.name} (dev)")
            log(f"{name} {variant} {run.name}: {result['metric']} {result['value']:.4f}")
            fold_results.append(result)
        summary[variant] = aggregate(fold_results)
        write_results(out / variant, summary[variant], f"{name} {variant} (dev)")
    (out / "comparison.md").write_text(comparison_markdown(name, summary))
    (out / "comparison.json").write_text(json.dumps(summary, indent=1))
    plot_comparison(name, summary, out / "comparison.png")
    log(f"{name}: comparison in {out / 'comparison.md'}")
    return {"variants": summary, "out_dir": str(out)}
