"""Schema of `emopillars generate` configs (see configs/generate_*.yaml)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from emopillars_jax.config import Section


class LLMConfig(Section):
    model: str = "qwen2.5-0.5b"       # asset name or a local .gguf path
    n_ctx: int = Field(4096, ge=256)   # tokens per sequence (prompt + answer)
    n_threads: int | None = Field(None, ge=1)   # None: all cores
    n_gpu_layers: int = Field(0, ge=-1)         # -1: offload every layer (CUDA build)
    chat_format: str | None = None    # None: the template stored in the GGUF
    seed: int = 0
    engine: Literal["batched", "single"] = "batched"
    n_seq: int = Field(8, ge=1)       # sequences decoded together by the batched engine
    n_batch: int = Field(512, ge=8)   # llama.cpp logical batch (tokens per decode call)
    flash_attn: bool = True           # batched engine: attention skips other sequences' cells


class Decoding(Section):
    temperature: float = Field(0.0, ge=0)   # 0: greedy, as in the paper
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    repeat_penalty: float = Field(1.03, gt=0)
    max_tokens: int = Field(300, ge=1)


class StageDecoding(Section):
    """Per-stage decoding; max new tokens follow the paper (300/500/100/300/300/300)."""
    characters: Decoding = Decoding(max_tokens=300)
    utterances: Decoding = Decoding(max_tokens=500)
    labels: Decoding = Decoding(max_tokens=100)
    context: Decoding = Decoding(max_tokens=300)
    cleaning: Decoding = Decoding(max_tokens=300)
    rewriting: Decoding = Decoding(max_tokens=300)


class CorpusConfig(Section):
    path: str = "embedded"            # 'embedded' (shipped plots) or a file/folder path
    format: Literal["auto", "wikiplots", "jsonl", "folder"] = "auto"
    titles: str | None = None         # WikiPlots titles file (default: beside the plots file)
    max_plots: int | None = Field(None, ge=1)


class ScoringConfig(Section):
    """labels_method=score: stage 3 from the LLM's log-probability of each class name as the
    answer to one prompt (data_gen/label_scoring.py, where the rules are explained)."""
    prompt: Literal["paper", "project", "short"] = "project"   # prompts.yaml `scoring:`
    # class priors subtracted from the log-probabilities: none, the mean over the run's own
    # utterances (run_standardized: also divided by their sd), or the mean over the
    # content-free inputs below
    calibration: Literal["none", "run", "run_standardized", "content_free"] = "run"
    content_free: tuple[str, ...] = Field(("N/A", "", "[MASK]"), min_length=1)
    target_prior: float = 0.0       # added to the score of the emotion stage 2 asked for
    temperature: float = Field(1.0, gt=0)   # p = softmax(calibrated scores / temperature)
    rule: Literal["relative", "top_k", "mass"] = "top_k"   # which classes become labels
    k: int = Field(3, ge=1, le=5)            # top_k: the k most probable classes
    mass: float = Field(0.5, gt=0, le=1)     # mass: fewest classes holding this probability
    # utterances decoded together: each takes 28 llama.cpp sequences (one per class) plus
    # one for the shared prefix, and llama.cpp allows 256 (LLAMA_MAX_SEQ): 1 + 28 * 9 <= 256
    n_seq: int = Field(8, ge=1, le=9)


class GenerateConfig(Section):
    out_dir: str = "runs/generate"
    corpus: CorpusConfig = CorpusConfig()
    llm: LLMConfig = LLMConfig()
    decoding: StageDecoding = StageDecoding()
    answer_mode: Literal["json", "free"] = "json"   # json: grammar-constrained answers
    # stage 3: the paper's generated answers (in answer_mode), or scored class names
    labels_method: Literal["answer", "score"] = "answer"
    scoring: ScoringConfig = ScoringConfig()
    max_characters: int = Field(15, ge=1)           # per plot
    utterances_non_neutral: int = Field(8, ge=0)    # per character
    utterances_neutral: int = Field(2, ge=0)
    context_fraction: float = Field(1 / 3, ge=0, le=1)
    label_threshold: float = Field(0.3, ge=0, le=1)
    max_retries: int = Field(2, ge=0)
    # greedy decoding would repeat a rejected answer: retries sample at this temperature
    # with a seed derived from (llm.seed, item id, attempt), so reruns stay reproducible
    retry_temperature: float = Field(0.7, gt=0)
    splits_contextless: tuple[float, float, float] = (0.8, 0.1, 0.1)
    splits_contextual: tuple[float, float, float] = (0.9, 0.05, 0.05)
    seed: int = 0                # context selection and split assignment
    merge: bool = False          # combine finished shards under out_dir, generate nothing
    progress: bool = True        # tqdm bars per stage

    @model_validator(mode="after")
    def _splits_sum_to_one(self):
        for name in ("splits_contextless", "splits_contextual"):
            ratios = getattr(self, name)
            if any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
                raise ValueError(f"{name} must be three non-negative ratios summing to 1, "
                                 f"got {list(ratios)}")
        if self.labels_method == "score" and self.scoring.rule != "relative" \
                and self.label_threshold <= 0:
            raise ValueError(f"scoring.rule={self.scoring.rule} needs label_threshold > 0 "
                             "(the levels of unselected classes must fall below it)")
        return self
