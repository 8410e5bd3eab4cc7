"""Schema of `emopillars train` / `evaluate` configs (see configs/train_*.yaml)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .config import Section
from .taxonomy import NUM_LABELS


class ModelConfig(Section):
    path: str = "minilm-l6"           # asset name or a local Hugging Face folder
    num_labels: int = Field(NUM_LABELS, ge=1)
    head: Literal["auto", "bert", "roberta"] = "auto"   # auto: from config.json model_type
    dtype: Literal["float32", "bfloat16"] = "float32"   # compute dtype; params stay fp32
    remat: bool = False
    dropout: float | None = Field(None, ge=0, lt=1)     # None: the checkpoint's config


class DataConfig(Section):
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    # auto: by file name (.csv -> csv, .tsv -> goemotions, .jsonl/.json -> emopillars when the
    # records have `utterance`, else jsonl)
    format: Literal["auto", "emopillars", "jsonl", "csv", "goemotions"] = "auto"
    mode: Literal["contextless", "contextual"] = "contextless"
    targets: Literal["binary", "soft"] = "binary"   # soft: scores of `all_emotions_mapped`
    max_length: int = Field(128, ge=8)
    bucket_boundaries: list[int] = [32, 64, 128]
    # generic readers: column names (labels: indices or names, list or "a,b" string)
    text_field: str = "text"
    context_field: str = "context"   # also the emopillars format's context
    labels_field: str = "labels"
    # emopillars format: the speaker and the utterance (in contextual mode, the utterance
    # rewritten to be ambiguous without its context). The release's contextual field names
    # are not documented offline: these defaults (and context_field's) are guesses, matching
    # the context-less release and data_gen's files; set them to the release's names.
    character_field: str = "character"
    utterance_field: str = "utterance"
    # logical data shards: the data order depends on this number only, not on how many
    # processes read it (None: one per process); must be a multiple of the process count
    num_shards: int | None = Field(None, ge=1)
    max_examples: int | None = Field(None, ge=1)     # per split, for quick runs

    @model_validator(mode="after")
    def _buckets_sorted(self):
        b = self.bucket_boundaries
        if not b or any(x < 1 for x in b) or sorted(set(b)) != b:
            raise ValueError(f"bucket_boundaries must be increasing positive lengths, got {b}")
        return self


class OptimConfig(Section):
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    clip_norm: float | None = Field(1.0, gt=0)
    grad_accum: int = Field(1, ge=1)
    head_lr_multiplier: float = Field(1.0, gt=0)   # LR of the classification head / encoder
    b1: float = Field(0.9, ge=0, lt=1)
    b2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    # per-class loss weights: None, "balanced" (from train label frequencies) or 28 numbers
    class_weights: Literal["balanced"] | list[float] | None = None


class MeshConfig(Section):
    shape: dict[str, int] = {"data": -1, "fsdp": 1, "tensor": 1}   # -1: fill with the rest
    # logical axis -> mesh axis (or list of axes, or null = replicated). Parameters carry the
    # logical names "vocab", "embed", "heads", "mlp", "labels"; the batch axis is "batch".
    rules: dict[str, str | list[str] | None] = {
        "batch": ["data", "fsdp"], "vocab": "tensor", "embed": "fsdp",
        "heads": "tensor", "mlp": "tensor", "labels": None, "length": None}

    @model_validator(mode="after")
    def _rules_match_the_mesh(self):
        # the default rules also name fsdp / tensor when a shape override leaves them out;
        # such axes are skipped at sharding time, but a misspelt one would be skipped too
        def axes(target):
            return [target] if isinstance(target, str) else list(target or [])
        known = set(self.shape) | {"data", "fsdp", "tensor"}
        for logical, target in self.rules.items():
            for axis in axes(target):
                if axis not in known:
                    raise ValueError(f"rules.{logical}: {axis!r} is not a mesh axis "
                                     f"(mesh.shape has {', '.join(self.shape)})")
        used = {axis for target in self.rules.values() for axis in axes(target)}
        for axis, size in self.shape.items():
            if size != 1 and axis not in used:
                raise ValueError(f"shape: axis {axis!r} is used by no entry of mesh.rules, "
                                 "so every device along it would repeat the same work")
        return self


class DistributedConfig(Section):
    # auto: initialise jax.distributed when coordinator env vars or a multi-task SLURM job say
    # so; cluster: always, letting JAX detect the cluster (TPU pods, SLURM, ...);
    # explicit: the fields below; off: single process
    mode: Literal["auto", "cluster", "explicit", "off"] = "auto"
    coordinator_address: str | None = None   # host:port of process 0
    num_processes: int | None = Field(None, ge=1)
    process_id: int | None = Field(None, ge=0)


class CheckpointConfig(Section):
    every_steps: int = Field(500, ge=1)
    keep: int = Field(2, ge=1)
    keep_best: bool = True
    resume: bool = True                 # continue from the latest good checkpoint in out_dir
    async_save: bool = True


class EvalConfig(Section):
    every_steps: int | None = Field(None, ge=1)    # None: at the end of each epoch
    threshold: float = Field(0.5, gt=0, lt=1)
    sweep_threshold: bool = True                   # sweep 0.05..0.95 on dev for macro-F1
    per_class_thresholds: bool = False
    batch_size: int | None = Field(None, ge=1)     # None: the training batch size
    # the checkpoint `emopillars evaluate` and the benchmark runner predict with:
    # best (by dev macro-F1) | latest | a step number
    checkpoint: str | int = "best"
    # single-label benchmarks: "em" re-estimates the dev set's class priors from its
    # unlabelled predictions before the argmax (when dev's class mix differs from train's)
    prior_shift: Literal["none", "em"] = "none"
    # single-label benchmarks: calibrate the posteriors (temperature, or bcts = temperature
    # plus a bias per class) on this fraction of train, held out from training
    calibration: Literal["none", "temperature", "bcts"] = "none"
    calibration_fraction: float = Field(0.1, gt=0, lt=1)


class TrainConfig(Section):
    out_dir: str = "runs/train"
    seed: int = 0
    epochs: float = Field(10, gt=0)
    batch_size: int = Field(64, ge=1)   # global, over all processes and devices
    max_steps: int | None = Field(None, ge=1)
    log_every: int = Field(10, ge=1)
    progress: bool = True
    # CPU backend: keep XLA's per-step scratch memory between steps instead of having the
    # kernel map and zero it afresh (emopillars_jax/host_memory.py); no effect on GPU/TPU
    reuse_host_memory: bool = True
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = MeshConfig()
    distributed: DistributedConfig = DistributedConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
