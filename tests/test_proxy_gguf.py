"""scripts/make_proxy_gguf.py: a vocab-only GGUF from the packaged SmolLM2, then a tiny
random-weight proxy in the Q4_K_M layout that real llama.cpp loads and decodes through the
project's engine."""
import subprocess
import sys
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf", reason="the gguf package is in the dev extra")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra (.[gen])")

from data_gen.config import Decoding, LLMConfig  # noqa: E402
from data_gen.engine import Request, open_engine  # noqa: E402
from emopillars_jax.assets import resolve_packaged  # noqa: E402

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_proxy_gguf.py"


def _make(*args):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_proxy_has_the_layout_and_decodes(tmp_path):
    source = resolve_packaged("smollm2-135m")
    vocab = tmp_path / "vocab.gguf"
    _make("--vocab-from", source, "--vocab-only", "--out", vocab)
    src_tokens = len(gguf.GGUFReader(source).fields["tokenizer.ggml.tokens"].data)
    reader = gguf.GGUFReader(vocab)
    assert not reader.tensors and vocab.stat().st_size < 5e6
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == src_tokens

    proxy = tmp_path / "tiny.gguf"
    _make("--vocab-from", vocab, "--preset", "tiny", "--out", proxy)
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(proxy).tensors}
    Q = gguf.GGMLQuantizationType
    # llama.cpp's Q4_K_M recipe: with 2 layers only the last keeps attn_v/ffn_down in Q6_K
    assert types["blk.0.attn_v.weight"] == Q.Q4_K and types["blk.1.attn_v.weight"] == Q.Q6_K
    assert types["blk.1.ffn_down.weight"] == Q.Q6_K and types["output.weight"] == Q.Q6_K
    assert types["token_embd.weight"] == Q.Q4_K and types["blk.0.attn_norm.weight"] == Q.F32

    engine = open_engine(LLMConfig(model=str(proxy), n_ctx=512, n_threads=1, engine="single"))
    assert engine.llm.n_vocab() == src_tokens
    [out] = engine.generate([Request(
        key="proxy-0", messages=({"role": "user", "content": "Tell me a story."},),
        decoding=Decoding(max_tokens=12, temperature=0.0))])
    assert out.error is None and 1 <= out.n_generated <= 12 and out.n_prompt > 5


def test_a_gguf_without_vocabulary_is_refused(tmp_path):
    bare = tmp_path / "bare.gguf"
    w = gguf.GGUFWriter(str(bare), "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--vocab-from", str(bare),
                           "--vocab-only", "--out", str(tmp_path / "x.gguf")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "no tokenizer.ggml.tokens" in proc.stderr
