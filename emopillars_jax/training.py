"""`emopillars train` / `evaluate`: sharded training of encoder classifiers.

The step is one `jax.jit` with explicit input/output shardings over the configured mesh
(the modern form of pjit): parameters and optimizer state are laid out by the logical-axis
rules in emopillars_jax.sharding, the batch is split over the batch axes and assembled from
each process's rows with `jax.make_array_from_process_local_data`. Master weights, optimizer
state and the loss are float32; the model computes in its configured dtype (bf16 or fp32).
Dropout keys are derived from (seed, step), so a resumed run repeats an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import data as data_lib
from . import evaluation
from . import sharding as shd
from .checkpointing import METRIC, Checkpointer, latest_metadata, restore_params
from .config import dump_config
from .errors import EmoPillarsError
from .host_memory import reuse_host_memory
from .taxonomy import LABELS
from .train_config import TrainConfig

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- model bundle

@dataclass
class ModelBundle:
    """What training needs from a model family: the module, its tokenizer and provenance."""
    model: nnx.Module
    encode_fn: data_lib.EncodeFn
    pad_id: int
    meta: dict = field(default_factory=dict)   # merged into the checkpoint "metadata" item


def tokenizer_encode_fn(tokenizer, max_length: int) -> data_lib.EncodeFn:
    """emopillars_jax.tokenization.Tokenizer -> unpadded (ids, token types) per example."""
    def encode(text_a, text_b):
        texts, contexts = (text_b, text_a) if text_b is not None else (text_a, None)
        out = tokenizer(texts, contexts, max_length=max_length, multiple=None)
        n = out["attention_mask"].sum(1)
        return ([out["input_ids"][i, :n[i]] for i in range(len(n))],
                [out["token_type_ids"][i, :n[i]] for i in range(len(n))])
    return encode


def load_bundle(cfg: TrainConfig) -> ModelBundle:
    from .assets import resolve
    from .models import load_encoder
    from .tokenization import Tokenizer
    folder = resolve(cfg.model.path, kind="encoder")
    contextual = cfg.data.mode == "contextual"
    model, ecfg = load_encoder(str(folder), num_labels=cfg.model.num_labels, head=cfg.model.head,
                               dtype=cfg.model.dtype, remat=cfg.model.remat,
                               dropout=cfg.model.dropout, seed=cfg.seed,
                               token_types=2 if contextual else None)
    tok = Tokenizer.from_folder(folder)
    meta = {"model_path": str(folder), "encoder_config": ecfg.to_hf(),
            "num_labels": ecfg.num_labels, "base_model": cfg.model.path}
    return ModelBundle(model, tokenizer_encode_fn(tok, cfg.data.max_length), tok.pad_id, meta)


def run_identity(cfg: TrainConfig, bundle: ModelBundle) -> dict:
    """What a resumed run must share with the checkpoints in its out_dir, besides the
    architecture: otherwise the old run would be continued (or reported finished) on other
    data or inputs. Paths are resolved, so a resume from another folder compares files."""
    model = bundle.meta.get("model_path")   # the resolved folder (test doubles have none)
    return {"model.path": str(Path(model).resolve()) if model else cfg.model.path,
            "data.train": str(Path(cfg.data.train).resolve()),
            "data.mode": cfg.data.mode, "data.targets": cfg.data.targets}


def check_checkpoint_fits(cfg: TrainConfig, bundle: ModelBundle, meta: dict, where,
                          *, resume: bool) -> None:
    """Stop with one line when `meta` (a checkpoint's metadata item) is of another model or
    run, instead of failing inside Orbax or setting good checkpoints aside as corrupt."""
    changed = []
    if meta.get("num_labels") not in (None, cfg.model.num_labels):
        changed.append(f"model.num_labels {meta['num_labels']} -> {cfg.model.num_labels}")
    old_arch = meta.get("encoder_config") or {}
    new_arch = bundle.meta.get("encoder_config") or {}   # test doubles have none
    if old_arch and new_arch:
        changed += [f"{k} {old_arch[k]} -> {new_arch.get(k)}" for k in sorted(old_arch)
                    if "dropout" not in k and old_arch[k] != new_arch.get(k)]
    old_run = meta.get("run_identity")   # absent in checkpoints of older versions
    if resume and old_run:
        new_run = run_identity(cfg, bundle)
        changed += [f"{k} {old_run[k]} -> {new_run.get(k)}" for k in sorted(old_run)
                    if old_run[k] != new_run.get(k)]
    if changed:
        what = "another run" if resume else "another model"
        hint = "use another out_dir, or restore the settings to resume" if resume else \
            "evaluate with the settings the run was trained with (its config.yaml)"
        raise EmoPillarsError(f"{where}: holds checkpoints of {what} ({'; '.join(changed)}); "
                              f"{hint}")


# ----------------------------------------------------------------------------- optimisation

def learning_rate_schedule(cfg, total_updates: int) -> optax.Schedule:
    warmup = int(round(cfg.warmup_ratio * total_updates))
    decay = max(total_updates - warmup, 1)
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(warmup, 1) if warmup else 0,
                                                  warmup + decay, end_value=0.0)
    after = optax.constant_schedule(cfg.lr) if cfg.schedule == "constant" else \
        optax.linear_schedule(cfg.lr, 0.0, decay)
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), after], [warmup])


def decay_mask(params):
    """Weight decay on matrices (kernels, embeddings) only: not on biases or LayerNorm."""
    return jax.tree.map(lambda x: np.ndim(x) >= 2, params)


HEAD = "head"   # top-level parameter group of the classification head (models.encoder)


def param_groups(params):
    """"head" for the classification head's parameters, "body" for the encoder's."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: HEAD if getattr(path[0], "key", None) == HEAD else "body", params)


def build_optimizer(cfg, total_updates: int) -> optax.GradientTransformation:
    """clip -> AdamW (decay mask) with warmup + decay; the head may use a larger LR (a new
    head on a pretrained encoder, e.g. MiniLM's untrained pooler, otherwise lags for
    hundreds of steps); gradient accumulation wraps the whole chain."""
    schedule = learning_rate_schedule(cfg, total_updates)

    def adamw(scale):
        lr = schedule if scale == 1 else (lambda n: scale * schedule(n))
        return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay, mask=decay_mask)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    if cfg.head_lr_multiplier == 1:
        parts.append(adamw(1))
    else:
        parts.append(optax.multi_transform({HEAD: adamw(cfg.head_lr_multiplier),
                                            "body": adamw(1)}, param_groups))
    tx = optax.chain(*parts)
    return optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum) if cfg.grad_accum > 1 else tx


def bce_loss(logits, targets, weights, class_weights=None):
    """Sigmoid BCE in float32, mean over classes then over real (weight > 0) examples.

    Targets may be soft (teacher scores in [0, 1]); class weights scale each class's term.
    """
    per = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                             targets.astype(jnp.float32))
    if class_weights is not None:
        per = per * class_weights
    per_example = per.mean(-1)
    return (per_example * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def balanced_class_weights(targets: np.ndarray) -> np.ndarray:
    """Inverse label frequency, normalised to mean 1 over seen classes, clipped to [0.1, 10];
    classes absent from the training set keep weight 1."""
    freq = (np.asarray(targets) >= 0.5).mean(0)
    w = np.ones_like(freq, dtype=np.float64)
    seen = freq > 0
    if seen.any():
        inv = 1.0 / freq[seen]
        w[seen] = np.clip(inv / inv.mean(), 0.1, 10.0)
    return w.astype(np.float32)


# ----------------------------------------------------------------------------- steps

def rng_streams(rest) -> list[str]:
    """Names of the NNX RNG streams in a model's non-parameter state (e.g. ["dropout"])."""
    tags = set()
    for leaf in jax.tree.leaves(rest, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        if isinstance(leaf, nnx.RngKey):
            tags.add(leaf.get_metadata().get("tag") if hasattr(leaf, "get_metadata")
                     else getattr(leaf, "tag", None))
    return sorted(t for t in tags if t)


class Steps:
    """The jitted train / eval steps of one model on one mesh."""

    def __init__(self, bundle_model: nnx.Module, mesh, rules, tx, *, seed: int,
                 class_weights: np.ndarray | None = None):
        self.graphdef, params_state, rest_state = nnx.split(bundle_model, nnx.Param, ...)
        self.streams = rng_streams(rest_state)
        # a plain dict, so merge makes fresh Variables inside each trace (reseed mutates them)
        self.rest = nnx.to_pure_dict(rest_state)
        self.mesh, self.rules, self.tx = mesh, rules, tx
        self.param_shardings = shd.state_shardings(params_state, rules, mesh)
        host_params = nnx.to_pure_dict(params_state)
        self.params = shd.put_global(jax.tree.map(np.asarray, host_params),
                                     self.param_shardings)
        self.repl = shd.replicated(mesh)
        self.opt_shardings = shd.like_params(jax.eval_shape(tx.init, self.params),
                                             self.params, self.param_shardings, self.repl)
        self.opt_state = jax.jit(tx.init, out_shardings=self.opt_shardings)(self.params)
        self.batch_sharding = shd.batch_sharding(mesh, rules)
        base_key = jax.random.key(seed)
        cw = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
        graphdef, rest, streams = self.graphdef, self.rest, self.streams

        def forward(params, batch, step, deterministic):
            model = nnx.merge(graphdef, params, rest)
            if not deterministic and streams:
                key = jax.random.fold_in(base_key, step)
                nnx.reseed(model, **{s: jax.random.fold_in(key, i) for i, s in enumerate(streams)})
            return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                         deterministic=deterministic)

        def train_step(params, opt_state, batch, step):
            def loss_of(p):
                logits = forward(p, batch, step, deterministic=False)
                return bce_loss(logits, batch["targets"], batch["weights"], cw)
            loss, grads = jax.value_and_grad(loss_of)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return params, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

        def eval_step(params, batch):
            return jax.nn.sigmoid(forward(params, batch, 0, deterministic=True))

        batch_sh = {k: self.batch_sharding for k in
                    ("input_ids", "attention_mask", "token_type_ids", "targets", "weights")}
        self._train = jax.jit(
            train_step,
            in_shardings=(self.param_shardings, self.opt_shardings, batch_sh, self.repl),
            out_shardings=(self.param_shardings, self.opt_shardings, self.repl),
            donate_argnums=(0, 1))
        eval_in = {k: self.batch_sharding for k in ("input_ids", "attention_mask",
                                                    "token_type_ids")}
        self._eval = jax.jit(eval_step, in_shardings=(self.param_shardings, eval_in),
                             out_shardings=self.repl)

    def train(self, local_batch: dict[str, np.ndarray], step: int) -> dict:
        batch = shd.global_batch(local_batch, self.batch_sharding)
        step_arr = shd.put_global(np.int32(step), self.repl)
        self.params, self.opt_state, metrics = self._train(self.params, self.opt_state,
                                                           batch, step_arr)
        return metrics

    def predict(self, enc: data_lib.Encoded, batch_size: int, boundaries, pad_id: int,
                params=None, progress: str | None = None) -> np.ndarray:
        """Probabilities [N, C] in file order (every process gets all of them); `progress`:
        the label of a progress bar (process 0 only)."""
        params = self.params if params is None else params
        probs = np.zeros(enc.targets.shape, np.float32)
        bar = None
        if progress and jax.process_index() == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(probs), desc=progress, unit="ex", leave=False)
        for local, positions in data_lib.eval_batches(
                enc, batch_size, boundaries, pad_id, jax.process_index(), jax.process_count()):
            batch = shd.global_batch({k: local[k] for k in ("input_ids", "attention_mask",
                                                            "token_type_ids")},
                                     self.batch_sharding)
            out = np.asarray(jax.device_get(self._eval(params, batch)))
            keep = positions >= 0
            probs[positions[keep]] = out[keep]
            if bar is not None:
                bar.update(int(keep.sum()))
        if bar is not None:
            bar.close()
        return probs


# ----------------------------------------------------------------------------- the run

def bucket_boundaries(cfg: TrainConfig) -> list[int]:
    """Configured boundaries below max_length, plus max_length itself."""
    return [b for b in cfg.data.bucket_boundaries if b < cfg.data.max_length] + \
        [cfg.data.max_length]


def optional_split(cfg: TrainConfig, path: str | None, name: str) -> data_lib.Examples | None:
    """A dev/test file, or None (with a warning) when it has no records - small generated
    datasets can leave a split empty."""
    if not path:
        return None
    p = Path(path)
    if p.is_file() and not p.read_bytes().strip():
        log.warning("data.%s: %s has no records; skipping it", name, p)
        return None
    return read_split(cfg, path)


def read_split(cfg: TrainConfig, path: str) -> data_lib.Examples:
    d = cfg.data
    return data_lib.read_examples(path, format=d.format, mode=d.mode, targets=d.targets,
                                  num_labels=cfg.model.num_labels, text_field=d.text_field,
                                  context_field=d.context_field, labels_field=d.labels_field,
                                  character_field=d.character_field,
                                  utterance_field=d.utterance_field,
                                  max_examples=d.max_examples)


class _Preemption:
    """SIGTERM (cluster preemption) and Ctrl-C set a flag; the loop saves and stops."""

    def __init__(self):
        self.flag = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: no handler
                pass
        return self

    def _handle(self, signum, frame):
        log.warning("received %s: saving a checkpoint and stopping",
                    signal.Signals(signum).name)
        self.flag = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def agreed(self) -> bool:
        """Any process preempted -> all stop at the same step."""
        if jax.process_count() == 1:
            return self.flag
        from jax.experimental import multihost_utils
        return bool(np.max(multihost_utils.process_allgather(np.int32(self.flag))))


class _History:
    """history.jsonl (process 0): one record per log line / evaluation, resume-safe."""

    def __init__(self, path: Path, resume_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        self.records = []
        if path.is_file():
            self.records = [r for r in map(json.loads, path.read_text().splitlines())
                            if r.get("step", 0) <= resume_step]
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def add(self, record: dict) -> None:
        self.records.append(record)
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def _tb_writer(out: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        log.info("tensorboardX is not installed: no TensorBoard logs")
        return None
    return SummaryWriter(str(out / "tb"))


def dev_selection(cfg: TrainConfig, targets: np.ndarray, probs: np.ndarray) -> tuple[dict, dict]:
    """Thresholds chosen on dev and the dev metrics under them."""
    gold = targets >= 0.5
    thresholds = evaluation.choose_thresholds(gold, probs, default=cfg.eval.threshold,
                                              sweep=cfg.eval.sweep_threshold,
                                              per_class=cfg.eval.per_class_thresholds)
    return thresholds, evaluation.evaluate_split(targets, probs, thresholds)


def train(cfg: TrainConfig, bundle: ModelBundle | None = None,
          on_step: Callable[[int], None] | None = None) -> dict:
    """Train (resuming when a checkpoint exists) and write reports; returns a summary.

    On CPU it first sets up scratch-memory reuse (cfg.reuse_host_memory); that only works
    before JAX starts, so a caller passing a `bundle` it built calls reuse_host_memory() first.
    """
    d = cfg.distributed
    shd.init_distributed(d.mode, d.coordinator_address, d.num_processes, d.process_id)
    reuse_host_memory(cfg.reuse_host_memory)
    out = Path(cfg.out_dir)
    primary = jax.process_index() == 0
    if not cfg.data.train:
        raise EmoPillarsError("data.train: no training file given")
    if cfg.batch_size % cfg.optim.grad_accum:
        raise EmoPillarsError(f"batch_size {cfg.batch_size} must be a multiple of "
                              f"optim.grad_accum {cfg.optim.grad_accum}")
    micro = cfg.batch_size // cfg.optim.grad_accum
    mesh = shd.make_mesh(cfg.mesh.shape)
    rules = cfg.mesh.rules
    shd.check_batch(micro, mesh, rules)
    eval_batch = cfg.eval.batch_size or micro
    shd.check_batch(eval_batch, mesh, rules)
    bundle = bundle or load_bundle(cfg)
    boundaries = bucket_boundaries(cfg)
    if cfg.checkpoint.resume and (meta := latest_metadata(out / "checkpoints")):
        check_checkpoint_fits(cfg, bundle, meta, out / "checkpoints", resume=True)

    # data: this process tokenizes only the logical shards it owns
    train_ex = read_split(cfg, cfg.data.train)
    nproc, pid = jax.process_count(), jax.process_index()
    num_shards = cfg.data.num_shards or nproc
    if num_shards % nproc:
        raise EmoPillarsError(f"data.num_shards {num_shards} must be a multiple of the "
                              f"process count {nproc}")
    mine = range(pid * num_shards // nproc, (pid + 1) * num_shards // nproc)
    shards = {s: data_lib.encode(train_ex, bundle.encode_fn,
                                 np.arange(s, len(train_ex), num_shards)) for s in mine}
    loader = data_lib.TrainLoader(shards, total=len(train_ex), num_shards=num_shards,
                                  global_batch=micro, seed=cfg.seed, boundaries=boundaries,
                                  pad_id=bundle.pad_id)
    dev_ex = optional_split(cfg, cfg.data.dev, "dev")
    dev = data_lib.encode(dev_ex, bundle.encode_fn) if dev_ex is not None else None
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * loader.steps_per_epoch)
    total_updates = math.ceil(total_steps / cfg.optim.grad_accum)
    cw = cfg.optim.class_weights
    if cw == "balanced":
        cw = balanced_class_weights(train_ex.targets)
    elif cw is not None and len(cw) != cfg.model.num_labels:
        raise EmoPillarsError(f"optim.class_weights: expected {cfg.model.num_labels} numbers, "
                              f"got {len(cw)}")
    tx = build_optimizer(cfg.optim, total_updates)
    steps = Steps(bundle.model, mesh, rules, tx, seed=cfg.seed,
                  class_weights=None if cw is None else np.asarray(cw, np.float32))
    schedule = learning_rate_schedule(cfg.optim, total_updates)

    ckpt = Checkpointer(out / "checkpoints", every_steps=cfg.checkpoint.every_steps,
                        keep=cfg.checkpoint.keep, keep_best=cfg.checkpoint.keep_best and
                        dev is not None, async_save=cfg.checkpoint.async_save)
    start, best, thresholds, dev_metrics = 0, None, None, None
    if cfg.checkpoint.resume:
        restored = ckpt.restore(steps.params, steps.opt_state)
        if restored is not None:
            start, steps.params, steps.opt_state, data_state, meta = restored
            loader.set_state(data_state)
            best, dev_metrics = meta.get("best_dev_macro_f1"), meta.get("metrics")
            if meta.get("metrics") is not None:
                thresholds = {"global": meta["threshold"], "per_class": meta.get("thresholds")}
            log.info("resumed from %s at step %d", ckpt.directory, start)
    if primary:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_config(cfg))
    history = _History(out / "history.jsonl", start, primary)
    writer = _tb_writer(out, primary)
    log.info("training: %d examples, %d steps/epoch, %d steps, global batch %d on mesh %s",
             len(train_ex), loader.steps_per_epoch, total_steps, cfg.batch_size,
             dict(mesh.shape))

    def meta_for(step):
        return {**bundle.meta, "step": step, "num_labels": cfg.model.num_labels,
                "labels": list(LABELS) if cfg.model.num_labels == len(LABELS) else None,
                "input_mode": cfg.data.mode, "training_data": cfg.data.train,
                "threshold": (thresholds or {}).get("global", cfg.eval.threshold),
                "thresholds": (thresholds or {}).get("per_class"), "metrics": dev_metrics,
                "best_dev_macro_f1": best, "config": cfg.model_dump(mode="json"),
                "run_identity": run_identity(cfg, bundle)}

    last_saved = start if start else None

    def save(step, metrics=None, force=False):
        nonlocal last_saved
        if last_saved == step:
            return
        if ckpt.save(step, steps.params, steps.opt_state, loader.get_state(), meta_for(step),
                     metrics=metrics, force=force):
            last_saved = step

    bar = None
    if primary and cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps, initial=start, unit="step", desc="train",
                   dynamic_ncols=True)
    status = "finished"
    seen, t0 = 0, time.perf_counter()
    with _Preemption() as preempt:
        for step in range(start, total_steps):
            batch = next(loader)
            metrics = steps.train(batch, step)
            done = step + 1
            seen += cfg.batch_size // cfg.optim.grad_accum
            if bar is not None:
                bar.update(1)
            if done % cfg.log_every == 0 or done == total_steps:
                loss = float(metrics["loss"])
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                seen, t0 = 0, time.perf_counter()
                lr = float(schedule(done // cfg.optim.grad_accum))
                rec = {"step": done, "loss": loss, "lr": lr,
                       "grad_norm": float(metrics["grad_norm"]), "examples_per_s": rate,
                       "epoch": loader.epoch + loader.step / loader.steps_per_epoch}
                history.add(rec)
                if writer:
                    for k in ("loss", "lr", "grad_norm", "examples_per_s"):
                        writer.add_scalar(f"train/{k}", rec[k], done)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", ex_s=f"{rate:.0f}")
            end_of_epoch = loader.step == loader.steps_per_epoch
            due = (cfg.eval.every_steps and done % cfg.eval.every_steps == 0) or \
                (not cfg.eval.every_steps and end_of_epoch) or done == total_steps
            if dev is not None and due:
                probs = steps.predict(dev, eval_batch, boundaries, bundle.pad_id,
                                      progress=cfg.progress and "dev")
                thresholds, m = dev_selection(cfg, dev.targets, probs)
                best = m["macro_f1"] if best is None else max(best, m["macro_f1"])
                dev_metrics = {k: m[k] for k in ("macro_f1", "micro_f1", "weighted_f1")}
                rec = {"step": done, "dev_macro_f1": m["macro_f1"],
                       "dev_micro_f1": m["micro_f1"], "threshold": thresholds["global"]}
                history.add(rec)
                if writer:
                    for k in ("dev_macro_f1", "dev_micro_f1", "threshold"):
                        writer.add_scalar(f"dev/{k[4:] if k.startswith('dev_') else k}",
                                          rec[k], done)
                log.info("step %d: dev macro-F1 %.4f (threshold %.2f)", done, m["macro_f1"],
                         thresholds["global"])
                save(done, metrics={METRIC: m["macro_f1"]}, force=True)
            else:
                save(done, force=done == total_steps)
            if on_step is not None:
                on_step(done)
            if preempt.agreed():
                save(done, force=True)
                status = "preempted"
                break
    if bar is not None:
        bar.close()
    ckpt.wait()
    if writer:
        writer.flush()
    summary = {"status": status, "step": last_saved, "best_dev_macro_f1": best,
               "out_dir": str(out)}
    if status == "finished":
        summary["report"] = final_report(cfg, steps, bundle, ckpt, dev, history.records,
                                         boundaries, eval_batch)
    ckpt.close()
    if writer:
        writer.close()
    if primary:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def final_report(cfg: TrainConfig, steps: Steps, bundle: ModelBundle, ckpt: Checkpointer,
                 dev: data_lib.Encoded | None, history: list[dict], boundaries,
                 eval_batch: int) -> dict | None:
    """Best (or final) params: thresholds on dev, applied unchanged to test; write reports."""
    params, which = steps.params, "final"
    best_step = ckpt.best_step() if dev is not None and cfg.checkpoint.keep_best else None
    if best_step is not None:
        ckpt.wait()
        params = restore_params(ckpt.directory, best_step, steps.param_shardings)[0]
        which = f"best (step {best_step})"
    results, thresholds = {}, None
    if dev is not None:
        probs = steps.predict(dev, eval_batch, boundaries, bundle.pad_id, params,
                              progress=cfg.progress and "dev")
        thresholds, results["dev"] = dev_selection(cfg, dev.targets, probs)
    test_ex = optional_split(cfg, cfg.data.test, "test")
    if test_ex is not None:
        test = data_lib.encode(test_ex, bundle.encode_fn)
        thresholds = thresholds or {"global": cfg.eval.threshold, "per_class": None}
        probs = steps.predict(test, eval_batch, boundaries, bundle.pad_id, params,
                              progress=cfg.progress and "test")
        results["test"] = evaluation.evaluate_split(test.targets, probs, thresholds)
    if not results or jax.process_index() != 0:
        return None
    paths = evaluation.write_report(Path(cfg.out_dir) / "eval", results, history,
                                    title=f"Evaluation of {cfg.out_dir} ({which})")
    for split, m in results.items():
        log.info("%s: macro-F1 %.4f micro-F1 %.4f (threshold %.2f)", split, m["macro_f1"],
                 m["micro_f1"], m["thresholds"]["global"])
    return {k: str(v) for k, v in paths.items()}


def evaluate(cfg: TrainConfig, bundle: ModelBundle | None = None) -> dict:
    """Evaluate a saved checkpoint of cfg.out_dir (eval.checkpoint) on dev and test."""
    d = cfg.distributed
    shd.init_distributed(d.mode, d.coordinator_address, d.num_processes, d.process_id)
    reuse_host_memory(cfg.reuse_host_memory)
    mesh = shd.make_mesh(cfg.mesh.shape)
    bundle = bundle or load_bundle(cfg)
    steps = Steps(bundle.model, mesh, cfg.mesh.rules, optax.identity(), seed=cfg.seed)
    params, meta, step = restore_params(
        Path(cfg.out_dir) / "checkpoints", cfg.eval.checkpoint, steps.param_shardings,
        check=lambda meta, where: check_checkpoint_fits(cfg, bundle, meta, where, resume=False))
    batch = cfg.eval.batch_size or cfg.batch_size
    shd.check_batch(batch, mesh, cfg.mesh.rules)
    boundaries = bucket_boundaries(cfg)
    results, thresholds = {}, None
    dev_ex = optional_split(cfg, cfg.data.dev, "dev")
    if dev_ex is not None:
        dev = data_lib.encode(dev_ex, bundle.encode_fn)
        probs = steps.predict(dev, batch, boundaries, bundle.pad_id, params,
                              progress=cfg.progress and "dev")
        thresholds, results["dev"] = dev_selection(cfg, dev.targets, probs)
    test_ex = optional_split(cfg, cfg.data.test, "test")
    if test_ex is not None:
        test = data_lib.encode(test_ex, bundle.encode_fn)
        thresholds = thresholds or {"global": meta.get("threshold", cfg.eval.threshold),
                                    "per_class": meta.get("thresholds")}
        probs = steps.predict(test, batch, boundaries, bundle.pad_id, params,
                              progress=cfg.progress and "test")
        results["test"] = evaluation.evaluate_split(test.targets, probs, thresholds)
    if not results:
        given = [f"data.{name}" for name, path in (("dev", cfg.data.dev), ("test", cfg.data.test))
                 if path]
        raise EmoPillarsError(f"evaluate: {' and '.join(given)} "
                              f"{'has' if len(given) == 1 else 'have'} no records" if given
                              else "evaluate: set data.dev and/or data.test")
    out = Path(cfg.out_dir) / f"eval_step{step}"
    if jax.process_index() == 0:
        evaluation.write_report(out, results, title=f"Evaluation of {cfg.out_dir} (step {step})")
    return {"step": step, "out": str(out),
            **{s: {"macro_f1": m["macro_f1"], "micro_f1": m["micro_f1"]}
               for s, m in results.items()}}


# ----------------------------------------------------------------------------- CLI

def run_train(args) -> int:
    from .config import load_config
    cfg = load_config(TrainConfig, args.config, args.overrides)
    summary = train(cfg)
    print(json.dumps(summary, indent=2))
    return 0


def run_evaluate(args) -> int:
    from .config import load_config
    cfg = load_config(TrainConfig, args.config, args.overrides)
    print(json.dumps(evaluate(cfg), indent=2))
    return 0
