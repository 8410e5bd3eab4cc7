"""LLM engines: llama.cpp through llama-cpp-python (one sequence at a time, or many
sequences per decode step), and a scripted engine for unit tests.

Every `generate` call starts from an empty KV cache, so its answers depend only on its
requests: llama.cpp's floating-point results change with the batch composition and with
which prompt prefixes are reused from its cache, and a resumed run (see pipeline.run_stage)
must ask the same calls as an uninterrupted one to get the same answers.

Both llama.cpp modes use the same chat template (the one stored in the GGUF unless
`llm.chat_format` gives a Jinja template), the same tokenisation and the same sampler
chain (repetition penalty -> optional JSON-schema grammar -> greedy, or top-k/top-p/
temperature with a per-request seed), so greedy answers agree up to floating-point
differences between batch shapes.
"""
from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from emopillars_jax.errors import AssetError, EmoPillarsError

from .config import Decoding, LLMConfig

log = logging.getLogger(__name__)
PENALTY_LAST_N = 64   # llama-cpp-python's default window for the repetition penalty


@dataclass(frozen=True)
class Request:
    key: str                       # stable id of the item (for errors and seeds)
    messages: tuple                # chat messages: ({"role": ..., "content": ...}, ...)
    decoding: Decoding
    schema: dict | None = None     # JSON schema: the answer is grammar-constrained
    seed: int = 0
    stage: str = ""


@dataclass
class Completion:
    text: str
    finish: str = "stop"           # stop | length | error
    n_prompt: int = 0
    n_generated: int = 0
    error: str | None = None


@dataclass
class EngineStats:
    calls: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_prompt_tokens: int = 0   # batched: prompt tokens copied from a cached prefix
    seconds: float = 0.0


class Engine(Protocol):
    stats: EngineStats

    def generate(self, requests: list[Request],
                 on_done: Callable[[int], None] | None = None) -> list[Completion]:
        """Answers in request order, a function of `requests` alone (no state carried over
        from earlier calls); on_done(i) is called as request i finishes."""
        ...

    def describe(self) -> dict: ...

    @property
    def width(self) -> int: ...


class ScriptedEngine:
    """Answers from a function of the request (unit tests, dry runs). `delay` slows each call."""

    def __init__(self, answer: Callable[[Request], str], delay: float = 0.0, width: int = 4):
        self.answer = answer
        self.delay = delay
        self._width = width
        self.stats = EngineStats()
        self.calls: list[tuple[Request, ...]] = []   # the requests of each generate call

    @property
    def width(self) -> int:
        return self._width

    def generate(self, requests: list[Request], on_done=None) -> list[Completion]:
        out = []
        self.calls.append(tuple(requests))
        for i, req in enumerate(requests):
            if self.delay:
                time.sleep(self.delay)
            text = self.answer(req)
            self.stats.calls += 1
            out.append(Completion(text=text, n_generated=len(text.split())))
            if on_done:
                on_done(i)
        return out

    def describe(self) -> dict:
        return {"model": "scripted", "model_sha256": "scripted", "engine": "scripted"}


def scripted_answer(req: Request, malformed_every: int = 0) -> str:
    """A deterministic, plausible answer per stage (a function of the prompt only), in the
    request's answer mode; every `malformed_every`-th answer (by prompt hash) is garbage, to
    exercise retries and rejects. Used by tests and the kill/resume and shard checks."""
    import hashlib
    from emopillars_jax.taxonomy import LABELS
    prompt = "".join(m["content"] for m in req.messages)
    h = int(hashlib.sha256(f"{prompt}|{req.seed}".encode()).hexdigest(), 16)
    if malformed_every and h % malformed_every == 0:
        return "I am sorry, I cannot { help"
    as_json = req.schema is not None
    emo = [e for e in LABELS if e != "neutral"]
    if req.stage == "characters":
        names = [f"Person {chr(65 + (h >> i) % 26)}{i}" for i in range(3)]
        if as_json:
            return json.dumps({"characters": [{"name": n, "description": "someone"} for n in names]})
        return "\n".join(f"{i + 1}. {n} - someone in the story" for i, n in enumerate(names))
    if req.stage == "utterances":
        e = [emo[(h >> (3 * i)) % len(emo)] for i in range(8)]
        lines = [(x, f"I feel the {x} rising as step {i} of {h % 97} unfolds") for i, x in enumerate(e)]
        neutral = [f"The road goes north past mill {h % 13 + i}" for i in range(2)]
        if as_json:
            return json.dumps({"emotional": [{"emotion": x, "utterance": u} for x, u in lines],
                               "neutral": neutral})
        return "\n".join([f"{x}: {u}" for x, u in lines] + [f"neutral: {u}" for u in neutral])
    if req.stage == "labels":
        picks = [(emo[(h >> (5 * i)) % len(emo)], round(((h >> (7 * i)) % 11) / 10, 1))
                 for i in range(5)]
        if as_json:
            return json.dumps({"emotions": [{"emotion": x, "level": v} for x, v in picks]})
        return "\n".join(f"{x}: {v}" for x, v in picks)
    field_, text = {"context": ("context", f"Earlier in the story event {h % 1000} happened "
                                           "and then the character arrived at the gate."),
                    "cleaning": ("context", f"Event {h % 1000} happened before the gate."),
                    "rewriting": ("utterance", f"So it is gate {h % 50} after all.")}[req.stage]
    return json.dumps({field_: text}) if as_json else text


# --------------------------------------------------------------------------- llama.cpp

def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise EmoPillarsError("llama-cpp-python is not installed: run "
                              "`pip install -e \".[gen]\"` (builds llama.cpp)") from None
    return llama_cpp


class _Grammars:
    """JSON schema -> llama.cpp GBNF, converted once per schema."""

    def __init__(self):
        self._cache: dict[str, object] = {}

    def get(self, schema: dict):
        from llama_cpp import LlamaGrammar
        key = json.dumps(schema, sort_keys=True)
        if key not in self._cache:
            self._cache[key] = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        return self._cache[key]


class LlamaEngine:
    """llama.cpp engine: `single` (high-level Llama, one sequence) or `batched`."""

    def __init__(self, cfg: LLMConfig, model_path: Path, model_sha256: str):
        llama_cpp = _import_llama_cpp()
        from llama_cpp import llama_chat_format
        self.cfg = cfg
        self.model_path = model_path
        self.model_sha256 = model_sha256
        self.mode = cfg.engine
        self.stats = EngineStats()
        self.n_threads = cfg.n_threads or max(1, os.cpu_count() or 1)
        with _quiet(f"loading {model_path}"):
            self.llm = llama_cpp.Llama(
                model_path=str(model_path), n_ctx=cfg.n_ctx if self.mode == "single" else 256,
                n_batch=min(cfg.n_batch, cfg.n_ctx), n_threads=self.n_threads,
                n_threads_batch=self.n_threads, n_gpu_layers=cfg.n_gpu_layers,
                # verbose: llama-cpp-python 0.3.36 maps ggml's log levels wrongly and drops
                # even loader errors when quiet; _quiet keeps the output off the terminal
                seed=cfg.seed, verbose=True)
        self.llm.verbose = False        # no timing report after every completion
        _set_llama_log_verbose(False)
        meta = self.llm.metadata
        template = cfg.chat_format if cfg.chat_format and "{%" in cfg.chat_format \
            else meta.get("tokenizer.chat_template")
        if cfg.chat_format and "{%" not in cfg.chat_format:
            if self.mode == "batched":
                raise EmoPillarsError(f"llm.chat_format: named format {cfg.chat_format!r} works "
                                      "only with llm.engine=single; give a Jinja template")
            self.formatter = None
            self.chat_format = cfg.chat_format
        else:
            if not template:
                raise AssetError(f"{model_path}: not a chat model (the GGUF has no "
                                 "tokenizer.chat_template); use an instruct model or set "
                                 "llm.chat_format to a Jinja chat template")
            model = self.llm._model
            eos, bos = model.token_eos(), model.token_bos()
            self.formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos])
            self.chat_format = "gguf" if template is meta.get("tokenizer.chat_template") \
                else "config-jinja"
        self.grammars = _Grammars()
        self._ctx = None
        self.label_scorer = None   # label_scoring.LlamaScorer, made on first use
        if self.mode == "batched":
            self._init_batched(llama_cpp)

    # -- shared helpers
    @property
    def width(self) -> int:
        return self.cfg.n_seq if self.mode == "batched" else 1

    def describe(self) -> dict:
        return {"model": self.model_path.name, "model_sha256": self.model_sha256,
                "engine": self.mode, "chat_format": self.chat_format,
                "n_ctx": self.cfg.n_ctx, "seed": self.cfg.seed}

    def render_prompt(self, messages) -> tuple[str, bool]:
        """The chat template's prompt text, and whether a BOS token goes before it."""
        try:
            result = self.formatter(messages=list(messages))
        except Exception:  # noqa: BLE001 - e.g. Mistral's template refuses a system role
            result = self.formatter(messages=fold_system(messages))
        return result.prompt, not result.added_special

    def tokenize_prompt(self, messages) -> list[int]:
        text, add_bos = self.render_prompt(messages)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def generate(self, requests: list[Request], on_done=None) -> list[Completion]:
        start = time.perf_counter()
        done = on_done or (lambda i: None)
        self._clear_cache()
        if self.mode == "single":
            out = []
            for i, r in enumerate(requests):
                out.append(self._single(r))
                done(i)
        else:
            out = self._batched(requests, done)
        self.stats.seconds += time.perf_counter() - start
        self.stats.calls += len(requests)
        for c in out:
            self.stats.prompt_tokens += c.n_prompt
            self.stats.generated_tokens += c.n_generated
        return out

    def _clear_cache(self) -> None:
        """Forget every cached prompt: cells are then filled from the first one again."""
        if self.mode == "single":
            self.llm.reset()                 # no prefix match against the last prompt
            self.llm._ctx.kv_cache_clear()
        else:
            self._lib.llama_memory_clear(self._mem, True)
            self._cached.clear()

    # -- single: the high-level API
    def _single(self, req: Request) -> Completion:
        d = req.decoding
        kwargs = dict(temperature=d.temperature, top_p=d.top_p, top_k=d.top_k, min_p=0.0,
                      repeat_penalty=d.repeat_penalty, max_tokens=d.max_tokens, seed=req.seed)
        if req.schema is not None:
            kwargs["grammar"] = self.grammars.get(req.schema)
        try:
            if self.formatter is not None:
                tokens = self.tokenize_prompt(req.messages)
                if len(tokens) + d.max_tokens > self.cfg.n_ctx:
                    return _too_long(len(tokens), d.max_tokens, self.cfg.n_ctx)
                self.llm.set_seed(req.seed)
                res = self.llm.create_completion(tokens, stop=[], **kwargs)
            else:
                res = self.llm.create_chat_completion(
                    messages=list(req.messages), chat_format=None, **kwargs)
        except (ValueError, RuntimeError) as exc:   # e.g. context overflow
            return Completion("", "error", error=str(exc)[:200])
        choice = res["choices"][0]
        text = choice.get("text") if "text" in choice else choice["message"]["content"]
        usage = res.get("usage", {})
        return Completion(text or "", "length" if choice.get("finish_reason") == "length"
                          else "stop", usage.get("prompt_tokens", 0),
                          usage.get("completion_tokens", 0))

    # -- batched: many sequences per llama_decode through the low-level API
    def _init_batched(self, llama_cpp) -> None:
        self._lib = llama_cpp
        # start from the high-level context's parameters (flash attention, KV types...)
        src = self.llm.context_params
        params = type(src).from_buffer_copy(src)
        params.n_ctx = self.cfg.n_ctx * self.cfg.n_seq   # llm.n_ctx is per sequence
        params.n_batch = self.cfg.n_batch
        params.n_ubatch = self.cfg.n_batch
        params.n_seq_max = self.cfg.n_seq
        params.n_threads = self.n_threads
        params.n_threads_batch = self.n_threads
        # one shared KV buffer: separate streams force equal-length ubatch splits, which
        # degrade prompt ingestion to ~1 token per sequence per step when mixed with decoding
        params.kv_unified = True
        # flash attention skips masked KV cells: with one buffer shared by all sequences
        # (and prefixes kept for reuse) plain attention would touch every cell per token
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED \
            if self.cfg.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        with _quiet("creating the batched context") as said:
            self._ctx = llama_cpp.llama_init_from_model(self.llm._model.model, params)
            why = "" if self._ctx else said()
        if not self._ctx:
            raise EmoPillarsError(f"llama.cpp could not create a context of {params.n_ctx} "
                                  "tokens for the batched engine (lower llm.n_ctx or llm.n_seq)"
                                  + why)
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = self.llm._model.vocab
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._batch = llama_cpp.llama_batch_init(self.cfg.n_batch, 0, self.cfg.n_seq)
        self._cached: dict[int, list[int]] = {}   # seq id -> tokens whose KV it holds
        # candidate buffer laid out as llama_token_data {int32 id; float logit; float p}
        self._cand = np.zeros(self._n_vocab, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        self._vocab_ids = np.arange(self._n_vocab, dtype=np.int32)

    def close(self) -> None:
        if self.label_scorer is not None:   # its context goes before the model it uses
            self.label_scorer.close()
            self.label_scorer = None
        if self._ctx is not None:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._ctx = None
        self.llm.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def _sampler(self, req: Request):
        """(chain, grammar): penalties -> greedy or top-k/top-p/temperature/dist, and the
        request's grammar sampler (None without a schema), kept apart; see _sample."""
        lib, d = self._lib, req.decoding
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lambda s: lib.llama_sampler_chain_add(chain, s)  # noqa: E731
        add(lib.llama_sampler_init_penalties(self._n_vocab, PENALTY_LAST_N,
                                             d.repeat_penalty, 0.0, 0.0))
        if d.temperature == 0:
            add(lib.llama_sampler_init_greedy())
        else:
            if d.top_k > 0:
                add(lib.llama_sampler_init_top_k(d.top_k))
            add(lib.llama_sampler_init_top_p(d.top_p, 1))
            add(lib.llama_sampler_init_temp(d.temperature))
            add(lib.llama_sampler_init_dist(req.seed & 0xFFFFFFFF))
        grammar = None
        if req.schema is not None:
            g = self.grammars.get(req.schema)
            grammar = lib.llama_sampler_init_grammar(self._vocab, g._grammar.encode("utf-8"),
                                                     g._root.encode("utf-8"))
        return chain, grammar

    def _sample(self, chain, grammar, idx: int) -> int:
        """Sample the token at batch row `idx`, checking the grammar lazily.

        Matching a grammar against every vocabulary entry costs a third of the decode time
        with a 150k-token vocabulary, so (as llama.cpp's own common sampler does) the token
        is drawn without the grammar first and only if the grammar rejects it is it drawn
        again from the grammar-masked candidates. Under greedy decoding the result is the
        same token; under sampling the draw renormalises over the allowed tokens."""
        lib, cand = self._lib, self._cand
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, idx),
                                       shape=(self._n_vocab,))

        def draw(with_grammar: bool) -> int:
            cand["id"] = self._vocab_ids
            cand["logit"] = logits
            cand["p"] = 0.0
            arr = lib.llama_token_data_array(
                cand.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)), self._n_vocab, -1,
                False)
            if with_grammar:
                lib.llama_sampler_apply(grammar, ctypes.byref(arr))
            lib.llama_sampler_apply(chain, ctypes.byref(arr))
            return int(arr.data[arr.selected].id)

        tok = draw(False)
        if grammar is not None:
            one = lib.llama_token_data(tok, 1.0, 0.0)
            probe = lib.llama_token_data_array(ctypes.pointer(one), 1, -1, False)
            lib.llama_sampler_apply(grammar, ctypes.byref(probe))
            if one.logit == float("-inf"):
                tok = draw(True)
            lib.llama_sampler_accept(grammar, tok)
        lib.llama_sampler_accept(chain, tok)
        return tok

    def _admit(self, tokens: list[int], seq: int) -> int:
        """Reuse the longest cached prefix of `tokens` (from any sequence) for `seq`;
        returns how many prompt tokens are already in `seq`'s KV cache."""
        lib, best, src = self._lib, 0, seq
        for s, cached in self._cached.items():
            n = _lcp(cached, tokens)
            if n > best or (n == best and s == seq):
                best, src = n, s
        best = min(best, len(tokens) - 1)   # decode at least one token to get logits
        if src == seq:
            lib.llama_memory_seq_rm(self._mem, seq, best, -1)
        else:
            lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
            if best > 0:
                lib.llama_memory_seq_cp(self._mem, src, seq, 0, best)
        self._cached[seq] = tokens[:best]
        return best

    def _batched(self, requests: list[Request], done: Callable[[int], None]) -> list[Completion]:
        lib, batch = self._lib, self._batch
        results: list[Completion | None] = [None] * len(requests)
        queue = list(range(len(requests)))[::-1]
        slots: dict[int, dict] = {}        # seq id -> state of the request it decodes
        free = list(range(self.cfg.n_seq))[::-1]
        prompts: dict[int, list[int]] = {}
        while queue or slots:
            while queue and free:            # admit waiting requests into free sequences
                i = queue[-1]
                req = requests[i]
                try:
                    tokens = prompts.get(i) or prompts.setdefault(i, self.tokenize_prompt(req.messages))
                except Exception as exc:  # noqa: BLE001 - a template error is per-request
                    queue.pop()
                    results[i] = Completion("", "error", error=f"chat template: {exc}"[:200])
                    done(i)
                    continue
                if len(tokens) + req.decoding.max_tokens > self.cfg.n_ctx:
                    queue.pop()
                    results[i] = _too_long(len(tokens), req.decoding.max_tokens, self.cfg.n_ctx)
                    done(i)
                    continue
                # a prompt sharing a long prefix with one still being ingested waits a step,
                # then copies that prefix's KV instead of computing it again
                cached = max((_lcp(c, tokens) for c in self._cached.values()), default=0)
                ingesting = max((_lcp(st["prompt"], tokens) for st in slots.values()
                                 if st["pending"] and len(st["pending"]) > 1), default=0)
                if ingesting > cached + 16:
                    break
                queue.pop()
                seq = free.pop()
                n_cached = self._admit(tokens, seq)
                self.stats.cached_prompt_tokens += n_cached
                slots[seq] = {"i": i, "pending": tokens[n_cached:], "pos": n_cached, "out": [],
                              "prompt": tokens, "sampler": self._sampler(req),
                              "n_prompt": len(tokens)}
            if not slots:
                break
            # fill one batch: decoding sequences first (1 token each), then prompt chunks
            batch.n_tokens = 0
            sample_at: dict[int, int] = {}
            fed: dict[int, list[int]] = {}
            for seq in sorted(slots, key=lambda s: len(slots[s]["pending"])):
                st = slots[seq]
                room = self.cfg.n_batch - batch.n_tokens
                if room <= 0:
                    break
                take = st["pending"][:room]
                for t in take:
                    j = batch.n_tokens
                    batch.token[j] = t
                    batch.pos[j] = st["pos"]
                    batch.n_seq_id[j] = 1
                    batch.seq_id[j][0] = seq
                    batch.logits[j] = 0
                    st["pos"] += 1
                    batch.n_tokens += 1
                fed[seq] = take
                st["pending"] = st["pending"][len(take):]
                if not st["pending"]:
                    batch.logits[batch.n_tokens - 1] = 1
                    sample_at[seq] = batch.n_tokens - 1
            rc = lib.llama_decode(self._ctx, batch)
            if rc != 0:
                raise EmoPillarsError(f"llama_decode failed with code {rc} "
                                      f"({len(slots)} sequences, {batch.n_tokens} tokens)")
            for seq, take in fed.items():
                self._cached[seq] = self._cached.get(seq, []) + take
            for seq, idx in sample_at.items():
                st = slots[seq]
                req = requests[st["i"]]
                tok = self._sample(*st["sampler"], idx)
                eog = lib.llama_vocab_is_eog(self._vocab, tok)
                if not eog:
                    st["out"].append(tok)
                if eog or len(st["out"]) >= req.decoding.max_tokens:
                    text = self.llm.detokenize(st["out"]).decode("utf-8", errors="replace")
                    results[st["i"]] = Completion(text, "stop" if eog else "length",
                                                  st["n_prompt"], len(st["out"]))
                    for sampler in st["sampler"]:
                        if sampler is not None:
                            lib.llama_sampler_free(sampler)
                    del slots[seq]       # its KV stays cached for prefix reuse
                    free.append(seq)
                    done(st["i"])
                else:
                    st["pending"] = [tok]
        return results  # type: ignore[return-value]


def fold_system(messages) -> list[dict]:
    """Merge a leading system message into the first user message (for chat templates
    that only accept alternating user/assistant turns)."""
    messages = list(messages)
    if len(messages) >= 2 and messages[0]["role"] == "system" and messages[1]["role"] == "user":
        merged = {"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}
        return [merged] + messages[2:]
    return messages


def _lcp(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _too_long(n_prompt: int, max_tokens: int, n_ctx: int) -> Completion:
    return Completion("", "error", n_prompt=n_prompt,
                      error=f"prompt of {n_prompt} tokens + max_tokens {max_tokens} exceeds "
                            f"the context of {n_ctx} tokens (raise llm.n_ctx)")


@contextlib.contextmanager
def _quiet(what: str):
    """Keep llama.cpp's C-level loader output (fd 1 and 2) off the terminal while `what` runs,
    but never lose it: a Python error gets its error lines, and a native abort or crash (a
    CUDA error, say) still prints where it happened (faulthandler on the real stderr)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    py_streams = sys.stdout, sys.stderr
    real_stderr = os.fdopen(os.dup(saved[1]), "w")
    was_enabled = faulthandler.is_enabled()
    faulthandler.enable(file=real_stderr)
    with tempfile.TemporaryFile(mode="w+b") as log:
        def said() -> str:
            """llama.cpp's last error lines so far, for an error message."""
            sys.stderr.flush()
            log.seek(0)
            lines = log.read().decode(errors="replace").splitlines()
            errors = [ln.strip() for ln in lines if "error" in ln or "fail" in ln][-3:]
            return f" (llama.cpp: {'; '.join(errors)})" if errors else ""

        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        # llama-cpp-python's log callback prints to sys.stderr, which is not always fd 2
        # (pytest, notebooks): point the Python streams at the log as well
        sys.stdout = sys.stderr = open(log.fileno(), "w", closefd=False)
        try:
            yield said
        except Exception as err:
            raise EmoPillarsError(f"llama.cpp failed while {what}: {err}{said()}") from err
        finally:
            sys.stderr.close()          # closefd=False: the log file itself stays open
            sys.stdout, sys.stderr = py_streams
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
            faulthandler.disable()
            if was_enabled:
                try:                    # back onto sys.stderr, when it is a real file
                    faulthandler.enable()
                except (ValueError, RuntimeError, OSError):
                    pass
            real_stderr.close()


def _set_llama_log_verbose(verbose: bool) -> None:
    try:
        from llama_cpp._logger import set_verbose
    except ImportError:
        return
    set_verbose(verbose)


def open_engine(cfg: LLMConfig) -> LlamaEngine:
    """Resolve the model (asset name or path), check it, and load it."""
    from emopillars_jax.assets import resolve, verified_sha256
    path = resolve(cfg.model, kind="gguf")
    return LlamaEngine(cfg, path, verified_sha256(path))
