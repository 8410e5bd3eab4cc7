"""Schema of `emopillars train` / `evaluate` configs (see configs/train_*.yaml)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

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
    format: Literal["auto", "emopillars", "jsonl", "csv"] = "auto"
    mode: Literal["contextless", "contextual"] = "contextless"
    targets: Literal["binary", "soft"] = "binary"
    max_length: int = Field(128, ge=8)
    bucket_boundaries: list[int] = [32, 64, 128]


class OptimConfig(Section):
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    clip_norm: float | None = Field(1.0, gt=0)
    grad_accum: int = Field(1, ge=1)
    b1: float = Field(0.9, ge=0, lt=1)
    b2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)


class MeshConfig(Section):
    shape: dict[str, int] = {"data": -1, "fsdp": 1, "tensor": 1}   # -1: fill with the rest


class CheckpointConfig(Section):
    every_steps: int = Field(500, ge=1)
    keep: int = Field(2, ge=1)
    keep_best: bool = True


class EvalConfig(Section):
    every_steps: int | None = Field(None, ge=1)    # None: at the end of each epoch
    threshold: float = Field(0.5, gt=0, lt=1)
    sweep_threshold: bool = True                   # sweep 0.05..0.95 on dev for macro-F1
    per_class_thresholds: bool = False


class TrainConfig(Section):
    out_dir: str = "runs/train"
    seed: int = 0
    epochs: float = Field(10, gt=0)
    batch_size: int = Field(64, ge=1)
    max_steps: int | None = Field(None, ge=1)
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
