"""Orbax checkpoints of training runs.

Layout: <out_dir>/checkpoints/<step>/ with four separately restorable items:
  params     model parameters as a nested dict (nnx.to_pure_dict layout of the nnx.Param
             state), float32; this is all that export / predict need
  opt_state  optax state (same tree as the optimizer's init), float32
  data       JSON: the training iterator state {"epoch", "step", "seed", ...}
  metadata   JSON: what export / predict read - "model_path" (base HF folder: tokenizer),
             "encoder_config" (config.json fields), "num_labels", "labels" (names),
             "input_mode" (contextless | contextual), "threshold" (global, from dev),
             "thresholds" (per class or null), "metrics" (dev), "base_model",
             "training_data"; plus "step", "best_dev_macro_f1", "config" (the run config)
Saves are asynchronous; kept: the latest `keep` steps plus the best step by dev macro-F1
(steps saved at an evaluation carry the metric). Restoring skips a latest step that is
unreadable (interrupted copy, corrupted file) for the previous good one, with a warning,
and moves the bad one aside to <step>.corrupt so the run can save that step again. When no
step restores, nothing is moved: the checkpoints are most likely of other settings.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from .errors import EmoPillarsError

log = logging.getLogger(__name__)

ITEMS = ("params", "opt_state", "data", "metadata")
METRIC = "dev_macro_f1"


def _handlers() -> dict:
    return {"params": ocp.StandardCheckpointHandler(), "opt_state": ocp.StandardCheckpointHandler(),
            "data": ocp.JsonCheckpointHandler(), "metadata": ocp.JsonCheckpointHandler()}


class _QuietAbsl(logging.Filter):
    """Orbax warns on every save without metrics once best_fn is set: expected here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage() and \
            "read_only=True" not in record.getMessage() and \
            "is read only" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietAbsl())


def _abstract(tree, shardings=None):
    """Arrays (or ShapeDtypeStructs) + optional shardings -> restore targets."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=getattr(x, "sharding", None)),
                            tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


class Checkpointer:
    def __init__(self, directory: str | Path, *, every_steps: int, keep: int = 2,
                 keep_best: bool = True, async_save: bool = True):
        self.directory = Path(directory).absolute()
        policies = [cm.LatestN(n=keep)]
        if keep_best:
            policies.append(cm.BestN(get_metric_fn=lambda m: m[METRIC], n=1,
                                     keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=every_steps, enable_async_checkpointing=async_save,
            preservation_policy=cm.AnyPreservationPolicy(policies),
            best_fn=(lambda m: m[METRIC]) if keep_best else None, best_mode="max",
            cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_handlers=_handlers())

    def save(self, step: int, params, opt_state, data_state: dict, meta: dict,
             metrics: dict | None = None, force: bool = False) -> bool:
        args = ocp.args.Composite(params=ocp.args.StandardSave(params),
                                  opt_state=ocp.args.StandardSave(opt_state),
                                  data=ocp.args.JsonSave(data_state),
                                  metadata=ocp.args.JsonSave(meta))
        return self.manager.save(step, args=args, metrics=metrics, force=force)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def restore(self, params_target, opt_target, step: int | None = None):
        """Newest readable step (or `step`) -> (step, params, opt_state, data, meta), or None.

        Targets are trees of arrays or ShapeDtypeStructs whose shardings say where restored
        arrays go - that is how a checkpoint written on 8 devices lands on 2.
        """
        candidates = [step] if step is not None else sorted(self.steps(), reverse=True)
        failed = []   # (step, error) of newer steps that did not restore
        for s in candidates:
            try:
                out = self.manager.restore(s, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(_abstract(params_target)),
                    opt_state=ocp.args.StandardRestore(_abstract(opt_target)),
                    data=ocp.args.JsonRestore(), metadata=ocp.args.JsonRestore()))
            except Exception as exc:   # unreadable, or of other settings: try an older step
                failed.append((s, f"{type(exc).__name__}: {str(exc)[:200]}"))
                continue
            for bad, error in failed:   # an older step reads, so these are damaged
                log.warning("checkpoint %s is unreadable (%s); restored step %d instead",
                            self.directory / str(bad), error, s)
                self._set_aside(bad)
            return s, out["params"], out["opt_state"], out["data"], out["metadata"]
        if failed:
            bad, error = failed[0]
            raise EmoPillarsError(
                f"{self.directory}: no checkpoint restores into this run ({bad}: {error}); "
                "most likely they were written with other model or optimizer settings "
                "(e.g. optim.grad_accum, optim.clip_norm, optim.head_lr_multiplier): use "
                "another out_dir or the run's own config.yaml")
        return None

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            bad = self.directory / str(step)
            if bad.exists():
                shutil.move(str(bad), str(bad.with_name(f"{step}.corrupt")))
        from jax.experimental import multihost_utils
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("checkpoint_set_aside")
        self.manager.reload()


def _pick_step(manager: ocp.CheckpointManager, which: str | int) -> int:
    steps = manager.all_steps()
    if not steps:
        raise EmoPillarsError(f"{manager.directory}: no checkpoints")
    if str(which) == "latest":
        return max(steps)
    if str(which) == "best":
        best = manager.best_step()
        return best if best is not None else max(steps)
    if str(which).isdigit() and int(which) in steps:
        return int(which)
    raise EmoPillarsError(f"{manager.directory}: no checkpoint step {which!r} "
                          f"(have {sorted(steps)}; or use best / latest)")


def int_keys(tree):
    """Orbax stores dict keys as strings: turn "0", "1" back into the ints NNX lists use."""
    if isinstance(tree, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): int_keys(v)
                for k, v in tree.items()}
    return tree


def has_steps(directory: Path) -> bool:
    """Orbax writes one numbered folder per step (<step>.corrupt once set aside)."""
    return any(p.is_dir() and p.name.split(".")[0].isdigit() for p in directory.iterdir())


def checkpoints_folder(path: Path) -> Path:
    """A training run's folder stands for its checkpoints/ (where Orbax writes the steps)."""
    if (path / "checkpoints").is_dir() and not has_steps(path):
        return path / "checkpoints"
    return path


def latest_metadata(directory: str | Path) -> dict | None:
    """The metadata item of the newest step whose metadata reads (None: no such step).
    In a multi-process run every process must call it (the managers it opens synchronise)."""
    directory = Path(directory).absolute()
    exists = directory.is_dir()
    if jax.process_count() > 1:   # one answer for all: process 0 may create it right after
        from jax.experimental import multihost_utils
        exists = bool(multihost_utils.broadcast_one_to_all(np.int32(exists)))
    if not exists:
        return None
    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(directory, options=options, item_handlers=_handlers()) as manager:
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                out = manager.restore(step, args=ocp.args.Composite(
                    metadata=ocp.args.JsonRestore()))
            except Exception:   # unreadable: a resuming run sets the step aside
                continue
            return dict(out["metadata"] or {})
    return None


def restore_params(directory: str | Path, which: str | int = "best", shardings=None,
                   check: Callable[[dict, Path], None] | None = None) -> tuple[Any, dict, int]:
    """Only the params item (+ metadata) of one step -> (params, meta, step).

    For export and evaluation. Without `shardings` the arrays come back on the default
    device, whatever mesh wrote them. `check(metadata, step folder)` runs before the arrays
    are read (to stop on a checkpoint of another model). In a multi-process run every
    process must call it.
    """
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise EmoPillarsError(f"{directory}: checkpoint folder not found")
    directory = checkpoints_folder(directory)
    options = ocp.CheckpointManagerOptions(read_only=True,
                                           best_fn=lambda m: m[METRIC], best_mode="max")
    with ocp.CheckpointManager(directory, options=options, item_handlers=_handlers()) as manager:
        step = _pick_step(manager, which)
        if check is not None:
            meta = manager.restore(step, args=ocp.args.Composite(
                metadata=ocp.args.JsonRestore()))["metadata"]
            check(dict(meta or {}), directory / str(step))
        meta_tree = int_keys(dict(manager.item_metadata(step)["params"]))
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), meta_tree)
        if shardings is not None:
            target = _abstract(target, shardings)
        out = manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(target), metadata=ocp.args.JsonRestore()))
    return out["params"], out["metadata"], step


def params_to_numpy(params) -> dict:
    return jax.tree.map(np.asarray, jax.device_get(params))
