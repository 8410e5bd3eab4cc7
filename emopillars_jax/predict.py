"""Emotion prediction from an exported Hugging Face folder or a training checkpoint.

Texts are tokenized once, sorted by length and cut into batches; each batch is padded only
up to its length bucket, so short texts never pay for long ones and the jitted forward pass
compiles once per (batch size, bucket).
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import EmoPillarsError, reading_text

log = logging.getLogger(__name__)

# fine steps where texts are most frequent: a static shape pads every batch up to its
# bucket (one compile each). GoEmotions dev in batches of 32: 11% more tokens than exact
# padding, against 19% with steps of 8
BUCKETS = (8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128, 192, 256, 384, 512)


QUANTIZE = ("none", "int8")


def quantize_int8(model):
    """Post-training dynamic int8 quantization (qwix) of the encoder layers' dense layers.

    Weights become int8 with one scale per output column; each activation row is quantized
    on the fly, so no calibration data is needed. The products run as int8 x int8 -> int32
    dots, which XLA:CPU runs about 5x faster than float32 ones on an AVX-512 VNNI CPU. The
    embeddings, attention products, LayerNorms and the classification head stay float32:
    the head's logits are what the thresholds were tuned on.
    """
    import jax.numpy as jnp
    import qwix
    rule = qwix.QuantizationRule(module_path=r"layers/.*", op_names=("dot_general",),
                                 weight_qtype=jnp.int8, act_qtype=jnp.int8)
    example = jnp.ones((1, 8), jnp.int32)   # qwix traces one call to find the layers
    return qwix.quantize_model(model, qwix.PtqProvider([rule]), example, example,
                               jnp.zeros_like(example))


class Predictor:
    def __init__(self, model, tokenizer, labels: Sequence[str], threshold: float = 0.5,
                 thresholds: Sequence[float] | None = None, input_mode: str = "contextless",
                 max_length: int = 128, batch_size: int = 64,
                 buckets: Sequence[int] = BUCKETS, quantize: str = "none"):
        """`quantize="int8"`: see quantize_int8 (about 2.5x faster on CPU; on GoEmotions dev
        probabilities moved by 0.10 at most and macro-F1 by -0.001, see the README)."""
        import jax
        from flax import nnx
        if quantize not in QUANTIZE:
            raise EmoPillarsError(f"quantize: expected one of {', '.join(QUANTIZE)}, "
                                  f"got {quantize!r}")
        if quantize == "int8":
            model = quantize_int8(model)
        self.tokenizer, self.labels = tokenizer, list(labels)
        self.threshold = np.asarray(thresholds if thresholds is not None else threshold,
                                    np.float32)
        max_length = min(max_length, model.config.max_tokens)
        self.input_mode, self.max_length, self.batch_size = input_mode, max_length, batch_size
        self.buckets = sorted({b for b in buckets if b < max_length} | {max_length})
        self.model = model
        graphdef, state = nnx.split(model)

        @jax.jit
        def probs(state, ids, mask, types):
            return jax.nn.sigmoid(nnx.merge(graphdef, state)(ids, mask, types))
        self._probs, self._state = probs, state
        self._warned: set[str] = set()   # predict() runs once per chunk of a large file

    @classmethod
    def from_path(cls, path: str | Path, **kwargs) -> "Predictor":
        """An exported HF folder (config.json) or a run's Orbax checkpoints folder."""
        from .models import load_encoder, read_hf_config
        from .tokenization import Tokenizer
        path = Path(path).expanduser()
        if not path.exists():
            raise EmoPillarsError(f"{path}: model folder not found")
        if not (path / "config.json").is_file():
            from .checkpointing import checkpoints_folder, has_steps
            if path.is_dir():
                path = checkpoints_folder(path)
            if not (path.is_dir() and has_steps(path)):
                raise EmoPillarsError(f"{path}: neither an exported model folder (with "
                                      "config.json) nor a training run's checkpoints (RUN or "
                                      "RUN/checkpoints, with numbered step folders)")
        if (path / "config.json").is_file():
            hf = read_hf_config(path)
            if "id2label" not in hf or hf.get("problem_type") != "multi_label_classification":
                raise EmoPillarsError(f"{path}/config.json: not an exported multi-label "
                                      "classifier (no id2label / problem_type)")
            labels = [hf["id2label"][str(i)] for i in range(len(hf["id2label"]))]
            model, _ = load_encoder(str(path), num_labels=len(labels))
            thresholds = hf.get("thresholds")
            if hf.get("input_max_length") and "max_length" not in kwargs:
                kwargs["max_length"] = hf["input_max_length"]
            return cls(model, Tokenizer.from_folder(path), labels,
                       threshold=hf.get("threshold", 0.5),
                       thresholds=[thresholds[n] for n in labels] if thresholds else None,
                       input_mode=hf.get("input_mode", "contextless"), **kwargs)
        from .export import label_names, load_from_checkpoint
        model, meta = load_from_checkpoint(path)
        max_length = ((meta.get("config") or {}).get("data") or {}).get("max_length")
        if max_length and "max_length" not in kwargs:
            kwargs["max_length"] = max_length
        return cls(model, Tokenizer.from_folder(meta["model_path"]),
                   label_names(model.config.num_labels, meta.get("labels")),
                   threshold=meta.get("threshold") or 0.5, thresholds=meta.get("thresholds"),
                   input_mode=meta.get("input_mode") or "contextless", **kwargs)

    def probabilities(self, texts: Sequence[str],
                      contexts: Sequence[str | None] | None = None) -> np.ndarray:
        """Sigmoid probabilities [N, num_labels] in the order of `texts`."""
        import jax.numpy as jnp
        from .tokenization import padded_length
        ids, types = self.tokenizer.unpadded(texts, contexts, max_length=self.max_length)
        order = np.argsort([len(i) for i in ids], kind="stable")
        out = np.zeros((len(texts), len(self.labels)), np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            length = padded_length(max(len(ids[r]) for r in rows), buckets=self.buckets,
                                   max_length=self.max_length)
            batch = self.tokenizer.pad([ids[r] for r in rows], [types[r] for r in rows], length)
            n = len(rows)
            if n < self.batch_size and len(texts) > self.batch_size:
                # a full-size last batch reuses the compiled shape
                batch = {k: np.concatenate([v, np.repeat(v[-1:], self.batch_size - n, 0)])
                         for k, v in batch.items()}
            p = self._probs(self._state, *(jnp.asarray(batch[k]) for k in
                                           ("input_ids", "attention_mask", "token_type_ids")))
            out[rows] = np.asarray(p)[:n]
        return out

    def predict(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None,
                threshold: float | None = None) -> list[dict]:
        """-> [{"scores": {label: prob}, "labels": [labels above threshold]}] per text."""
        if isinstance(texts, str):
            texts = [texts]
        warning = None
        if contexts is not None and self.input_mode != "contextual":
            warning = "this model was trained without context; contexts are used anyway"
        elif contexts is None and self.input_mode == "contextual":
            warning = ("this model was trained with a context before each utterance; "
                       "without one (--context) its scores are less reliable")
        if warning and warning not in self._warned:
            self._warned.add(warning)
            log.warning(warning)
        probs = self.probabilities(list(texts), contexts)
        thr = self.threshold if threshold is None else np.float32(threshold)
        results = []
        for row in probs:
            results.append({
                "scores": {name: round(float(p), 6) for name, p in zip(self.labels, row)},
                "labels": [name for name, p, t in
                           zip(self.labels, row, np.broadcast_to(thr, row.shape)) if p >= t],
            })
        return results

    def held_out_scores(self, examples) -> dict:
        """Macro-F1 on labelled context-less examples (data.read_examples) at this model's
        own threshold, and at one swept on them (optimistic): evaluation.threshold_scores."""
        from .evaluation import threshold_scores
        return threshold_scores(examples.targets >= 0.5, self.probabilities(examples.text_a),
                                self.threshold)


def read_inputs(path: str | Path) -> tuple[list[str], list[str | None]]:
    """A JSON Lines or CSV file with a `text` (or `utterance`) and optional `context` field."""
    path = Path(path)
    if not path.is_file():
        raise EmoPillarsError(f"{path}: file not found")
    rows: list[tuple[int, dict]] = []   # (line number, record)
    with reading_text(path), open(path, newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(fh)
            rows = [(reader.line_num, row) for row in reader]
        else:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append((n, json.loads(line)))
                    except ValueError:
                        raise EmoPillarsError(f"{path}:{n}: not valid JSON") from None
    texts, contexts = [], []
    for n, row in rows:
        text = row.get("text") or row.get("utterance") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise EmoPillarsError(f"{path}:{n}: expected a non-empty 'text' "
                                  "(or 'utterance') field")
        context = row.get("context")
        if context is not None and not isinstance(context, str):
            raise EmoPillarsError(f"{path}:{n}: 'context' must be a string, got "
                                  f"{type(context).__name__}")
        texts.append(text)
        contexts.append(context or None)
    if not texts:
        raise EmoPillarsError(f"{path}: no records")
    return texts, contexts


def _done_records(out: Path, texts: Sequence[str]) -> int:
    """Predictions already in `out`, each checked to be this command's record for the same
    input (so a foreign file is never appended to or cut); a torn last line (crash) is cut."""
    if not out.exists():
        return 0
    if not out.is_file():
        raise EmoPillarsError(f"--out {out}: not a file")
    data = out.read_bytes()
    keep = data[:data.rfind(b"\n") + 1]
    with reading_text(out):
        lines = keep.decode("utf-8").splitlines()
    torn = data[len(keep):]
    record_start = b'{"text": '   # how every record written below starts
    if torn and not (torn.startswith(record_start) or record_start.startswith(torn)):
        lines.append(torn.decode("utf-8", "replace"))
    records = []
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if not (isinstance(rec, dict) and isinstance(rec.get("scores"), dict)
                and isinstance(rec.get("labels"), list)):
            raise EmoPillarsError(f"--out {out}:{n}: not a prediction record (JSON with text, "
                                  "scores, labels); remove the file or choose another --out")
        records.append(rec)
    if len(records) > len(texts):
        raise EmoPillarsError(f"{out}: has {len(records)} records, more than the "
                              f"{len(texts)} inputs; remove it or choose another --out")
    for n, (rec, text) in enumerate(zip(records, texts), 1):
        if rec.get("text") != text:
            raise EmoPillarsError(f"{out}: its record {n} is not a prediction for input "
                                  f"{n}; remove it or choose another --out")
    if torn:
        out.write_bytes(keep)
    return len(records)


def run_predict(args) -> int:
    """`emopillars predict MODEL (--text T [--context C] | --file F) [--out O] [--threshold]`.

    With --out, predictions are appended chunk by chunk; re-running the same command after
    an interruption continues after the records already written.
    """
    if bool(args.text) == bool(args.file):
        raise EmoPillarsError("predict: give --text (repeatable) or --file, not both or neither")
    if args.file:
        texts, contexts = read_inputs(args.file)
        if args.out and Path(args.out).exists() and Path(args.out).samefile(args.file):
            raise EmoPillarsError(f"--out {args.out}: the same file as --file; write the "
                                  "predictions to another file")
    else:
        texts, contexts = list(args.text), [args.context] * len(args.text)
    if not any(contexts):
        contexts = None
    # check an existing --out before the slow model load
    done = _done_records(Path(args.out), texts) if args.out else 0
    predictor = Predictor.from_path(args.model, quantize=args.quantize)
    if not args.out:
        for text, res in zip(texts, predictor.predict(texts, contexts, threshold=args.threshold)):
            top = sorted(res["scores"].items(), key=lambda kv: -kv[1])[:3]
            print(f"{text[:60]!r}: {', '.join(res['labels']) or '(none)'}  "
                  f"[top: {', '.join(f'{k} {v:.2f}' for k, v in top)}]")
        return 0
    from tqdm import tqdm
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if done:
        print(f"{out}: {done} predictions already there, continuing")
    chunk = 1024
    with open(out, "a", encoding="utf-8") as fh, \
            tqdm(total=len(texts), initial=done, unit="text", desc="predict") as bar:
        for start in range(done, len(texts), chunk):
            part = slice(start, start + chunk)
            ctx = contexts[part] if contexts else None
            for i, res in enumerate(predictor.predict(texts[part], ctx, args.threshold)):
                record = {"text": texts[start + i],
                          **({"context": ctx[i]} if ctx else {}), **res}
                fh.write(json.dumps(record) + "\n")
            fh.flush()
            bar.update(len(texts[part]))
    print(f"wrote {len(texts)} predictions to {out}")
    return 0
