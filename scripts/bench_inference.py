"""Inference speed: JAX Predictor vs transformers + PyTorch on the same exported MiniLM.

Both sides get the same texts in the same length-sorted batches of the same size and do
their own tokenization; torch uses as many threads as there are cores; each side is warmed
up once (JAX compiles its buckets), then all are timed `--repeats` times, interleaved;
medians are printed. Four predictors: JAX float32 and JAX with `quantize="int8"`, against
torch float32 (the named baseline) and torch's own dynamic int8 quantization of the same
encoder layers (`torch.ao.quantization.quantize_dynamic`), so the int8 gain is shown
against its like too.

With `--model` (an exported folder or a run's checkpoints folder) a trained model is used
instead of the untrained packaged MiniLM; when the texts file has GoEmotions label ids in
its second column, macro-F1 at the model's threshold is printed for every predictor.

    .venv/bin/python scripts/bench_inference.py [--texts FILE.tsv] [--n 512] [--batch 32]
        [--model runs/.../checkpoints]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

# the GoEmotions dev set where ../shared sits beside the repository; else synthetic sentences
DEFAULT_TSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "goemotions" / "dev.tsv"


def load_texts(path: Path | None, n: int) -> tuple[list[str], list[list[int]] | None, str]:
    """-> texts, label ids per text (None when the file has none), source."""
    if path and path.is_file():
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
        rows = rows[:n] if n > 0 else rows
        texts = [r[0] for r in rows]
        try:
            labels = [[int(x) for x in r[1].split(",")] for r in rows]
        except (IndexError, ValueError):
            labels = None
        return texts, labels, str(path)
    # fallback: sentences of mixed lengths (GoEmotions-like: mostly short)
    words = ("honestly i did not expect the ending to hit me this hard but here we are "
             "crying over a cartoon at two in the morning thanks a lot").split()
    rng = __import__("random").Random(0)
    return [" ".join(rng.choices(words, k=rng.choice([4, 8, 12, 16, 24, 40])))
            for _ in range(n if n > 0 else 512)], None, "synthetic sentences"


def exported_folder(model_path: Path | None, tmp: Path) -> Path:
    """The HF folder both sides load: the given one, the given checkpoint exported, or the
    untrained packaged MiniLM exported."""
    from emopillars_jax.assets import resolve
    from emopillars_jax.export import export_from_checkpoint, export_model
    from emopillars_jax.models import load_encoder
    if model_path is None:
        model, _ = load_encoder("minilm-l6", seed=0)
        return export_model(model, tmp / "minilm", tokenizer_folder=resolve("minilm-l6"))
    if (model_path / "config.json").is_file():
        return model_path
    return export_from_checkpoint(model_path, tmp / "model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=Path, help="TSV, text in column 1 (default: GoEmotions "
                    "dev in ../shared beside the repository, else synthetic sentences)")
    ap.add_argument("--n", type=int, default=512, help="first N texts (0: all)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--model", type=Path, help="exported folder or checkpoints folder")
    args = ap.parse_args()

    import numpy as np
    import torch
    import transformers
    from emopillars_jax.evaluation import metrics
    from emopillars_jax.predict import Predictor

    if args.texts is not None and not args.texts.is_file():
        ap.error(f"--texts {args.texts}: file not found")
    texts, label_ids, source = load_texts(args.texts or DEFAULT_TSV, args.n)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    with tempfile.TemporaryDirectory() as tmp:
        folder = exported_folder(args.model, Path(tmp))
        jax_fp32 = Predictor.from_path(folder, batch_size=args.batch, max_length=args.max_length)
        jax_int8 = Predictor.from_path(folder, batch_size=args.batch, max_length=args.max_length,
                                       quantize="int8")
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        torch_fp32 = transformers.AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=torch.float32).eval()
        # the same layers as quantize="int8": the encoder's dense layers, not the head
        encoder_linears = {name for name, m in torch_fp32.named_modules()
                           if isinstance(m, torch.nn.Linear) and ".encoder." in f".{name}"}
        with warnings.catch_warnings():   # torch points eager quantization to torchao
            warnings.simplefilter("ignore")
            torch_int8 = torch.ao.quantization.quantize_dynamic(
                transformers.AutoModelForSequenceClassification.from_pretrained(
                    folder, dtype=torch.float32).eval(), encoder_linears, dtype=torch.qint8)

        # the batches the predictor forms (length-sorted), given to torch as well
        ids, _ = jax_fp32.tokenizer.unpadded(texts, max_length=args.max_length)
        order = np.argsort([len(i) for i in ids], kind="stable")
        batches = [[texts[i] for i in order[s:s + args.batch]]
                   for s in range(0, len(order), args.batch)]
        restore = np.argsort(order)

        def torch_run(model):
            def run():
                out = []
                with torch.inference_mode():
                    for batch in batches:
                        enc = tok(batch, padding="longest", truncation=True,
                                  max_length=args.max_length, return_tensors="pt")
                        out.append(torch.sigmoid(model(**enc).logits).numpy())
                return np.concatenate(out)[restore]   # back to input order
            return run

        runners = {"JAX float32": lambda: jax_fp32.probabilities(texts),
                   "JAX int8 (qwix)": lambda: jax_int8.probabilities(texts),
                   "torch float32": torch_run(torch_fp32),
                   "torch int8 (dynamic)": torch_run(torch_int8)}
        probs = {name: run() for name, run in runners.items()}   # warm-up, kept for accuracy
        rates: dict[str, list[float]] = {name: [] for name in runners}
        # interleaved, so load from other processes hits all sides alike
        for _ in range(args.repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                rates[name].append(len(texts) / (time.perf_counter() - start))
        threshold = jax_fp32.threshold

    median = {name: statistics.median(r) for name, r in rates.items()}
    base = median["torch float32"]
    print(f"texts: {len(texts)} from {source}; batch {args.batch}; max_length "
          f"{args.max_length}; {cores} cores (torch threads {torch.get_num_threads()}); "
          f"model: {args.model or 'untrained packaged MiniLM-L6'}")
    gold = None
    if label_ids is not None:
        gold = np.zeros((len(texts), len(jax_fp32.labels)), np.int32)
        for row, ids_ in enumerate(label_ids):
            gold[row, ids_] = 1
    ref = probs["JAX float32"]
    for name in runners:
        line = (f"{name:21s}: median {median[name]:7.1f} examples/s  "
                f"{median[name] / base:4.2f}x torch float32  "
                f"(runs: {', '.join(f'{r:.0f}' for r in rates[name])})  "
                f"max |prob - JAX float32| {np.abs(probs[name] - ref).max():.1e}")
        if gold is not None:
            pred = (probs[name] >= threshold).astype(np.int32)
            line += f"  macro-F1 {metrics(gold, pred)['macro_f1']:.4f}"
        print(line)
    print(f"ratio JAX / torch, float32: {median['JAX float32'] / base:.2f}x; "
          f"int8: {median['JAX int8 (qwix)'] / median['torch int8 (dynamic)']:.2f}x; "
          f"JAX int8 / torch float32: {median['JAX int8 (qwix)'] / base:.2f}x")


if __name__ == "__main__":
    main()
