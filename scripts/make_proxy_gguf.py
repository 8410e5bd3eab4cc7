#!/usr/bin/env python
"""Write a throughput proxy GGUF: a real architecture's shapes and quantization layout with
random weights, and the tokenizer (plus chat template) of an existing GGUF.

Decode speed depends on shapes, quant types and token counts, not on weight values, so a
proxy measures LLM calls per GPU-hour where the real weights cannot be present (a machine
without network, a CI box). Its text is noise: never use it for data.

    # 1. here: keep only the tokenizer of a small local model (a 2-3 MB vocab-only GGUF)
    python scripts/make_proxy_gguf.py --vocab-from smollm2.gguf --vocab-only --out vocab.gguf
    # 2. on the GPU box: Mistral-7B shapes, Q4_K_M layout (about 4.4 GB)
    python scripts/make_proxy_gguf.py --vocab-from vocab.gguf --preset mistral-7b --out proxy.gguf
    python scripts/bench_generate.py --model proxy.gguf --n-gpu-layers -1 --answer-mode free
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as Q
except ImportError:
    sys.exit("make_proxy_gguf needs the gguf package: pip install gguf==0.19.0")

PRESETS = {  # llama-architecture hyper-parameters (Mistral-7B-Instruct-v0.2's config.json)
    "mistral-7b": dict(n_layer=32, n_embd=4096, n_ff=14336, n_head=32, n_head_kv=8,
                       rope_base=1e6, n_ctx=32768),
    "tiny": dict(n_layer=2, n_embd=256, n_ff=512, n_head=4, n_head_kv=2,
                 rope_base=1e4, n_ctx=2048),
}


def more_bits(layer: int, n_layer: int) -> bool:
    """Layers whose attn_v / ffn_down llama.cpp's Q4_K_M recipe keeps in Q6_K."""
    return layer < n_layer // 8 or layer >= 7 * n_layer // 8 or (layer - n_layer // 8) % 3 == 2


def random_blocks(rng, qtype, rows: int, cols: int) -> np.ndarray:
    """Random bytes of `rows` x `cols` weights in `qtype`, with small finite block scales
    (typical |w| ~ 0.02) so activations stay finite through every layer."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    if qtype == Q.Q4_K:     # d, dmin (fp16) lead the 144-byte block
        data[..., 0:4] = np.frombuffer(np.array([1e-4, 1e-4], np.float16).tobytes(), np.uint8)
    elif qtype == Q.Q6_K:   # d (fp16) ends the 210-byte block
        data[..., 208:210] = np.frombuffer(np.array([3e-5], np.float16).tobytes(), np.uint8)
    else:
        raise ValueError(f"no random layout for {qtype.name}")
    return data.reshape(rows, -1)


def copy_tokenizer(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> int:
    """Copy tokenizer.* keys; returns the vocabulary size."""
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        writer.add_key_value(key, value, vtype, sub_type=sub)
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
    if not n_vocab:
        sys.exit(f"{reader.data.filename}: no tokenizer.ggml.tokens: not a GGUF with a vocabulary")
    return n_vocab


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab-from", required=True, help="a GGUF whose tokenizer to copy")
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="mistral-7b", choices=sorted(PRESETS))
    ap.add_argument("--vocab-only", action="store_true", help="write the tokenizer only")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    hp = PRESETS[args.preset]
    writer = gguf.GGUFWriter(args.out, "llama")
    writer.add_name(f"proxy-{args.preset} (random weights, throughput only)")
    n_vocab = copy_tokenizer(gguf.GGUFReader(args.vocab_from), writer)
    writer.add_context_length(hp["n_ctx"])
    writer.add_embedding_length(hp["n_embd"])
    writer.add_block_count(hp["n_layer"])
    writer.add_feed_forward_length(hp["n_ff"])
    writer.add_head_count(hp["n_head"])
    writer.add_head_count_kv(hp["n_head_kv"])
    writer.add_rope_dimension_count(hp["n_embd"] // hp["n_head"])
    writer.add_rope_freq_base(hp["rope_base"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)

    if not args.vocab_only:
        rng = np.random.default_rng(args.seed)
        d, ff, n_layer = hp["n_embd"], hp["n_ff"], hp["n_layer"]
        d_kv = d // hp["n_head"] * hp["n_head_kv"]

        def matrix(name, qtype, rows, cols):
            writer.add_tensor(name, random_blocks(rng, qtype, rows, cols), raw_dtype=qtype)

        def norm(name):
            writer.add_tensor(name, np.ones(d, np.float32))

        matrix("token_embd.weight", Q.Q4_K, n_vocab, d)
        for i in range(n_layer):
            hi = Q.Q6_K if more_bits(i, n_layer) else Q.Q4_K
            norm(f"blk.{i}.attn_norm.weight")
            matrix(f"blk.{i}.attn_q.weight", Q.Q4_K, d, d)
            matrix(f"blk.{i}.attn_k.weight", Q.Q4_K, d_kv, d)
            matrix(f"blk.{i}.attn_v.weight", hi, d_kv, d)
            matrix(f"blk.{i}.attn_output.weight", Q.Q4_K, d, d)
            norm(f"blk.{i}.ffn_norm.weight")
            matrix(f"blk.{i}.ffn_gate.weight", Q.Q4_K, ff, d)
            matrix(f"blk.{i}.ffn_up.weight", Q.Q4_K, ff, d)
            matrix(f"blk.{i}.ffn_down.weight", hi, d, ff)
        norm("output_norm.weight")
        matrix("output.weight", Q.Q6_K, n_vocab, d)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=not args.vocab_only)
    writer.close()
    print(f"wrote {args.out}: {args.preset}{' vocab only' if args.vocab_only else ''}, "
          f"{n_vocab} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
