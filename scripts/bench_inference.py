"""Inference speed: JAX Predictor vs transformers + PyTorch on the same exported MiniLM.

Both sides get the same texts in the same length-sorted batches of the same size and do
their own tokenization; torch uses as many threads as there are cores; each side is warmed
up once (JAX compiles its buckets), then both are timed `--repeats` times, interleaved;
medians are printed.

    .venv/bin/python scripts/bench_inference.py [--texts FILE.tsv] [--n 512] [--batch 32]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_TSV = Path("/work/shared/data/goemotions/dev.tsv")


def load_texts(path: Path | None, n: int) -> tuple[list[str], str]:
    if path and path.is_file():
        texts = [line.split("\t")[0] for line in path.read_text(encoding="utf-8").splitlines()]
        return texts[:n], str(path)
    # fallback: sentences of mixed lengths (GoEmotions-like: mostly short)
    words = ("honestly i did not expect the ending to hit me this hard but here we are "
             "crying over a cartoon at two in the morning thanks a lot").split()
    rng = __import__("random").Random(0)
    return [" ".join(rng.choices(words, k=rng.choice([4, 8, 12, 16, 24, 40])))
            for _ in range(n)], "synthetic sentences"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=Path, default=DEFAULT_TSV, help="TSV, text in column 1")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()

    import numpy as np
    import torch
    import transformers
    from emopillars_jax.assets import resolve
    from emopillars_jax.export import export_model
    from emopillars_jax.models import load_encoder
    from emopillars_jax.predict import Predictor

    texts, source = load_texts(args.texts, args.n)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = load_encoder("minilm-l6", seed=0)
        folder = export_model(model, Path(tmp) / "minilm", tokenizer_folder=resolve("minilm-l6"))

        predictor = Predictor.from_path(folder, batch_size=args.batch,
                                        max_length=args.max_length)
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        torch_model = transformers.AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=torch.float32).eval()

        # the batches the predictor forms (length-sorted), given to torch as well
        ids, _ = predictor.tokenizer.unpadded(texts, max_length=args.max_length)
        order = np.argsort([len(i) for i in ids], kind="stable")
        batches = [[texts[i] for i in order[s:s + args.batch]]
                   for s in range(0, len(order), args.batch)]

        def run_jax():
            return predictor.probabilities(texts)

        def run_torch():
            out = []
            with torch.inference_mode():
                for batch in batches:
                    enc = tok(batch, padding="longest", truncation=True,
                              max_length=args.max_length, return_tensors="pt")
                    out.append(torch.sigmoid(torch_model(**enc).logits).numpy())
            return np.concatenate(out)

        # interleaved, so load from other processes hits both sides alike
        run_jax(), run_torch()   # warm-up (JAX compiles each bucket shape)
        jax_all, torch_all = [], []
        for _ in range(args.repeats):
            for fn, rates in ((run_jax, jax_all), (run_torch, torch_all)):
                start = time.perf_counter()
                fn()
                rates.append(len(texts) / (time.perf_counter() - start))
        jax_rate, torch_rate = statistics.median(jax_all), statistics.median(torch_all)
        # same numbers on both sides (rows of torch are in sorted order)
        diff = np.abs(run_jax()[order] - run_torch()).max()

    print(f"texts: {len(texts)} from {source}; batch {args.batch}; max_length "
          f"{args.max_length}; {cores} cores (torch threads {torch.get_num_threads()})")
    print(f"JAX predictor      : median {jax_rate:8.1f} examples/s  "
          f"(runs: {', '.join(f'{r:.0f}' for r in jax_all)})")
    print(f"transformers torch : median {torch_rate:8.1f} examples/s  "
          f"(runs: {', '.join(f'{r:.0f}' for r in torch_all)})")
    print(f"ratio JAX / torch  : {jax_rate / torch_rate:.2f}x   "
          f"(max |prob diff| {diff:.1e})")


if __name__ == "__main__":
    main()
