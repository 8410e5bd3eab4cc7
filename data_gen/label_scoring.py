"""Stage 3 by label scoring (`labels_method: score`): each of the 28 class names is scored by
the LLM's own log-probability of that name (all of its tokens) as the answer to one prompt
per utterance; the class priors are calibrated away and the 28 probabilities become the
stage's usual record, so everything downstream works unchanged.

Scores. The prompt (prompts.yaml `scoring:`, through the engine's chat template) ends where
the assistant's answer starts; a class's tokens are those of `prompt + name` after the
prompt's own tokens (tokenised in context, checked to read back as the name), with no
leading space or newline: the chat templates used here (ChatML) end the generation prompt
with a newline, and the answer's first word follows it directly. log p(name) = the sum over
its tokens of the log-softmax (over the vocabulary, in float64) of the logits before each.

llama.cpp. The batched scorer decodes the prompt part shared by every utterance (system
message, emotion list, instruction) once per call into sequence 0, copies it into 28 branch
sequences per utterance (`llama_memory_seq_cp`; with one unified KV buffer the cells are
shared, not copied), then decodes, in one batch for up to `scoring.n_seq` utterances, each
utterance's own prompt tokens (each belonging to all 28 of its branches) and every class's
tokens but the last (each in its class's branch): the prompt's last logits give each
class's first token, and a class token's logits the next one. So an utterance costs its
own prompt tokens plus about 28 short continuations. 1 + 28 * n_seq sequences must stay
within llama.cpp's LLAMA_MAX_SEQ (256), hence n_seq <= 9. With `llm.engine=single` the
high-level `Llama` does the same one sequence at a time (eval the prefix, then per
utterance its prompt, then per class its tokens one by one, rewinding `n_tokens`). As in
engine.py, every call starts from an empty cache, so its scores depend on its requests only
(and a resumed run, asking the same fixed chunks, writes the same records).

Calibration. s_c = log p(c) - prior_c (+ scoring.target_prior for the emotion stage 2 asked
the utterance to express), prior = 0 (`none`), the mean log-probability of each class over
the run's own utterances (`run`; "Calibrate Before Use", Zhao et al. 2021, estimated on the
run itself) or over fixed content-free utterances (`content_free`: "N/A", "", "[MASK]").
`run_standardized` also divides each class's calibrated score by its standard deviation over
the run's utterances (so a class whose score barely moves with the text cannot win
everywhere on a small offset; on 500 validation utterances with Qwen 0.5B it raised top-3
macro-F1 against the paper's labels from 0.222 to 0.252, README "Teacher score").
The run's priors exist only once every utterance is scored, so the stage scores into a raw
store (`labels_scores.jsonl`, the 28 log-probabilities per utterance) first, then computes
the priors, stores them (`labels_priors.json`, reused by a resumed run, and the stage
summary in manifest.json), then writes `labels.jsonl`.

Labels. p = softmax(s / temperature). `emotions` lists the 5 most probable classes as
[name, level], primary first, level = p / p_max rounded to 0.1 (the paper's
expressiveness levels, read as levels relative to the primary emotion); pipeline's
process_labels then keeps a class when its level >= label_threshold. Rules:
- relative: exactly that (the paper's threshold on the rounded relative levels; the levels
  are not altered).
- top_k: the k most probable classes; mass: the fewest most probable classes whose p sums
  to at least scoring.mass (at most 5). To make the threshold keep exactly those, only the
  levels at the border move: a selected class gets at least the first 0.1 step >= the
  threshold, an unselected one at most the step below it (so these rules need a threshold
  > 0); the order, the primary and every other level stay as they are.
The record also keeps `distribution` (the 28 probabilities, in taxonomy order; carried into
the dataset as soft targets) and `logprobs` (the raw scores); `raw` is the top 5 as JSON.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from emopillars_jax.errors import EmoPillarsError
from emopillars_jax.taxonomy import LABELS, NUM_LABELS, canonical_label, prompt_label_list

from . import prompts
from .config import GenerateConfig
from .engine import _lcp
from .store import Store

RUN_CALIBRATIONS = ("run", "run_standardized")   # estimated on the run's own utterances
TOP = 5                      # classes listed in `emotions`, as the paper's answers
CONTENT_FREE_CHARACTER = "Someone"
_SENTINELS = ("Ab", "Zy")    # two items whose prompts part where the item's fields begin


@dataclass(frozen=True)
class ScoreRequest:
    key: str                 # item id (for errors)
    messages: tuple          # chat messages of the scoring prompt
    # the same prompt for two sentinel items: their common tokens are the prefix shared by
    # every utterance (decoded once per call); () shares nothing
    anchors: tuple = ()


class Scorer(Protocol):
    def score(self, requests: list[ScoreRequest],
              on_done: Callable[[int], None] | None = None) -> list[list[float]]:
        """The 28 class log-probabilities of each request, a function of `requests` alone."""
        ...

    def describe(self) -> dict: ...

    @property
    def width(self) -> int: ...   # utterances decoded together


# ------------------------------------------------------------------------ prompts

def scoring_messages(cfg: GenerateConfig, character: str, utterance: str) -> tuple:
    t = prompts.templates()
    user = t["scoring"][cfg.scoring.prompt]["user"].format(
        emotion_list=prompt_label_list(), emotion_names=", ".join(LABELS),
        character=character, utterance=utterance)
    return ({"role": "system", "content": t["system"]}, {"role": "user", "content": user})


def _request(key: str, cfg: GenerateConfig, character: str, utterance: str) -> ScoreRequest:
    return ScoreRequest(key, scoring_messages(cfg, character, utterance),
                        tuple(scoring_messages(cfg, s, s) for s in _SENTINELS))


def make_score_request(item: dict, cfg: GenerateConfig) -> ScoreRequest:
    return _request(item["utterance_id"], cfg, item.get("character") or CONTENT_FREE_CHARACTER,
                    item["utterance"])


def content_free_requests(cfg: GenerateConfig) -> list[ScoreRequest]:
    return [_request(f"content_free:{i}", cfg, CONTENT_FREE_CHARACTER, text)
            for i, text in enumerate(cfg.scoring.content_free)]


# ------------------------------------------------------------------------ arithmetic

def priors_from(logprobs: Sequence[Sequence[float]]) -> list[float]:
    """Mean log-probability of each class (in the given order: reproducible to the bit)."""
    return [float(x) for x in np.asarray(logprobs, dtype=np.float64).mean(axis=0)]


def scales_from(logprobs: Sequence[Sequence[float]]) -> list[float]:
    """Standard deviation of each class's log-probability (floored: a constant class)."""
    return [max(float(x), 1e-6) for x in np.asarray(logprobs, dtype=np.float64).std(axis=0)]


def calibrated(logprobs: Sequence[float], priors: Sequence[float], target: str | None,
               target_prior: float, scales: Sequence[float] | None = None) -> np.ndarray:
    s = np.asarray(logprobs, dtype=np.float64) - np.asarray(priors, dtype=np.float64)
    if scales is not None:
        s = s / np.asarray(scales, dtype=np.float64)
    label = canonical_label(target) if target else None
    if label is not None and target_prior:
        s[LABELS.index(label)] += target_prior
    return s


def softmax(s: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = s / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def _step(x: float) -> float:
    """x rounded to the 0.1 grid of the paper's levels (half up)."""
    return math.floor(x * 10 + 0.5 + 1e-9) / 10


def select(p: np.ndarray, order: list[int], rule: str, k: int, mass: float) -> int:
    """How many of the most probable classes (`order`) the top_k / mass rule keeps."""
    if rule == "top_k":
        return k
    total, n = 0.0, 0
    for c in order[:TOP]:
        total += float(p[c])
        n += 1
        if total >= mass - 1e-12:
            break
    return n


def levels(p: np.ndarray, cfg: GenerateConfig) -> list[list]:
    """The top 5 as [name, level], primary first (see the module docstring for the rules)."""
    order = sorted(range(NUM_LABELS), key=lambda c: (-p[c], c))[:TOP]
    top = float(p[order[0]])
    lv = [_step(float(p[c]) / top) for c in order]
    sc = cfg.scoring
    if sc.rule != "relative":
        n = select(p, order, sc.rule, sc.k, sc.mass)
        keep = math.ceil(round(cfg.label_threshold * 10, 6)) / 10   # first step >= threshold
        drop = round(keep - 0.1, 1)                                 # the step below it
        lv = [max(v, keep) if i < n else min(v, drop) for i, v in enumerate(lv)]
    return [[LABELS[c], v] for c, v in zip(order, lv)]


def label_record(ids: dict, logprobs: Sequence[float], priors: Sequence[float],
                 target: str | None, cfg: GenerateConfig,
                 scales: Sequence[float] | None = None) -> dict:
    """The labels stage's record of one utterance from its 28 raw log-probabilities."""
    p = softmax(calibrated(logprobs, priors, target, cfg.scoring.target_prior, scales),
                cfg.scoring.temperature)
    emotions = levels(p, cfg)
    raw = json.dumps({"scores": [[n, round(float(p[LABELS.index(n)]), 4)] for n, _ in emotions]})
    return {**ids, "emotions": emotions, "distribution": [round(float(x), 6) for x in p],
            "logprobs": [round(float(x), 6) for x in logprobs], "raw": raw, "attempts": 1}


# ------------------------------------------------------------------------ vocabulary checks

@dataclass
class Vocabulary:
    """What the class-name checks need from a tokenizer (a fake one in tests)."""
    name: str                                      # the model, for error messages
    tokenize: Callable[[str, bool], list[int]]     # (text, as a prompt: BOS/specials) -> ids
    detokenize: Callable[[list[int]], str]
    is_fallback: Callable[[int], bool]             # an unknown or byte-fallback token


def class_tokens(vocab: Vocabulary, prompt_text: str, prompt: list[int],
                 names: Sequence[str] = LABELS) -> list[list[int]]:
    """Each name's tokens as the answer after `prompt_text` (whose tokens are `prompt`):
    tokenised in context when the prompt's tokens stay a prefix, else on its own; refused
    when the vocabulary cannot spell the name."""
    out = []
    for name in names:
        full = vocab.tokenize(prompt_text + name, True)
        toks = full[len(prompt):] if full[:len(prompt)] == prompt else vocab.tokenize(name, False)
        back = vocab.detokenize(toks) if toks else ""
        if back != name or all(vocab.is_fallback(t) for t in toks):
            raise EmoPillarsError(
                f"{vocab.name}: its vocabulary cannot spell the class name {name!r} (tokens "
                f"{toks} read back as {back!r}); labels_method=score needs a model that can")
        out.append(toks)
    return out


# ------------------------------------------------------------------------ scorers

def _scripted_logprobs(req: ScoreRequest) -> list[float]:
    """Deterministic, plausible log-probabilities from the prompt's hash (tests, dry runs)."""
    prompt = "".join(m["content"] for m in req.messages)
    h = hashlib.sha256(prompt.encode("utf-8")).digest()
    return [-1.0 - 11.0 * b / 255 for b in h[:NUM_LABELS]]


class ScriptedScorer:
    """Log-probabilities from a function of the request (unit tests), like ScriptedEngine."""

    def __init__(self, logprobs: Callable[[ScoreRequest], Sequence[float]] = _scripted_logprobs,
                 width: int = 4):
        self.logprobs = logprobs
        self._width = width
        self.calls: list[tuple[ScoreRequest, ...]] = []

    @property
    def width(self) -> int:
        return self._width

    def score(self, requests, on_done=None) -> list[list[float]]:
        self.calls.append(tuple(requests))
        out = []
        for i, r in enumerate(requests):
            out.append([float(x) for x in self.logprobs(r)])
            if on_done:
                on_done(i)
        return out

    def describe(self) -> dict:
        return {"scorer": "scripted"}

    def close(self) -> None:
        pass


def _log_softmax_at(logits: np.ndarray, targets: list[int]) -> list[float]:
    x = logits.astype(np.float64)
    m = x.max()
    lse = m + math.log(float(np.exp(x - m).sum()))
    return [float(x[t] - lse) for t in targets]


@dataclass
class _Prepared:
    tokens: list[int]           # the prompt
    classes: list[list[int]]    # each class's tokens as its answer
    shared: int                 # leading prompt tokens taken from the shared prefix


class LlamaScorer:
    """Class log-probabilities through a LlamaEngine's model: batched (own llama context,
    1 + 28 * n_seq sequences) or, for llm.engine=single, the engine's high-level Llama."""

    def __init__(self, engine, n_seq: int):
        import llama_cpp
        if engine.formatter is None:
            raise EmoPillarsError("labels_method=score needs a Jinja chat template (a named "
                                  f"llm.chat_format like {engine.chat_format!r} is not supported)")
        self.engine, self.llm, self._lib = engine, engine.llm, llama_cpp
        self.n_seq = n_seq if engine.mode == "batched" else 1
        self.n_ctx = engine.cfg.n_ctx            # per utterance: prompt + class tokens
        vocab = self.llm._model.vocab
        fallback = (llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN | llama_cpp.LLAMA_TOKEN_ATTR_BYTE)
        self.vocab = Vocabulary(
            engine.model_path.name,
            lambda text, as_prompt: self.llm.tokenize(
                text.encode("utf-8"), add_bos=as_prompt and self._add_bos, special=as_prompt),
            lambda toks: self.llm.detokenize(toks).decode("utf-8", errors="replace"),
            lambda t: bool(llama_cpp.llama_vocab_get_attr(vocab, t) & fallback))
        # whether prompts start with a BOS token is the chat template's, the same for all
        self._add_bos = engine.render_prompt(({"role": "user", "content": "x"},))[1]
        self._prefixes: dict[str, list[int]] = {}
        self._ctx = None
        if engine.mode == "batched":
            self._init_context(llama_cpp, engine)

    @property
    def width(self) -> int:
        return self.n_seq

    def describe(self) -> dict:
        return {"scorer": f"llama.cpp {self.engine.mode}", "n_seq": self.n_seq}

    def _init_context(self, lib, engine) -> None:
        from .engine import _quiet
        src = self.llm.context_params
        params = type(src).from_buffer_copy(src)
        # the shared prefix once, and per utterance at most n_ctx cells (checked in _prepare)
        params.n_ctx = (self.n_seq + 1) * self.n_ctx
        params.n_batch = params.n_ubatch = engine.cfg.n_batch
        params.n_seq_max = 1 + NUM_LABELS * self.n_seq
        params.n_threads = params.n_threads_batch = engine.n_threads
        params.kv_unified = True      # branch sequences share the prompt's cells
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if engine.cfg.flash_attn \
            else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        with _quiet("creating the label-scoring context") as said:
            self._ctx = lib.llama_init_from_model(self.llm._model.model, params)
            why = "" if self._ctx else said()
        if not self._ctx:
            raise EmoPillarsError(f"llama.cpp could not create a context of {params.n_ctx} "
                                  f"tokens and {params.n_seq_max} sequences for label scoring "
                                  "(lower llm.n_ctx or scoring.n_seq)" + why)
        self._mem = lib.llama_get_memory(self._ctx)
        self._n_batch = engine.cfg.n_batch
        self._batch = lib.llama_batch_init(self._n_batch, 0, NUM_LABELS)
        self._n_vocab = lib.llama_vocab_n_tokens(self.llm._model.vocab)

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._ctx = None

    # -- preparation (shared by both paths)
    def _tokens(self, messages) -> tuple[str, list[int]]:
        text, add_bos = self.engine.render_prompt(messages)
        return text, self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def _shared_prefix(self, req: ScoreRequest) -> list[int]:
        """The tokens the request's two anchor prompts have in common (cached)."""
        if not req.anchors:
            return []
        key = json.dumps(req.anchors)
        if key not in self._prefixes:
            renders = [self._tokens(a)[1] for a in req.anchors]
            self._prefixes[key] = renders[0][:_lcp(*renders)]
        return self._prefixes[key]

    def _prepare(self, req: ScoreRequest) -> _Prepared:
        text, tokens = self._tokens(req.messages)
        classes = class_tokens(self.vocab, text, tokens)
        shared = min(_lcp(tokens, self._shared_prefix(req)), len(tokens) - 1)
        fed = sum(len(c) - 1 for c in classes)
        need = max(len(tokens) + max(map(len, classes)), len(tokens) - shared + fed)
        if need > self.n_ctx:
            raise EmoPillarsError(f"label scoring of {req.key}: the prompt of {len(tokens)} "
                                  f"tokens plus a class name needs {need} tokens, more than "
                                  f"llm.n_ctx={self.n_ctx} (raise llm.n_ctx)")
        return _Prepared(tokens, classes, shared)

    def score(self, requests: list[ScoreRequest], on_done=None) -> list[list[float]]:
        start = time.perf_counter()
        done = on_done or (lambda i: None)
        prepared = [self._prepare(r) for r in requests]
        out = self._batched(prepared, done) if self._ctx is not None \
            else self._single(prepared, done)
        st = self.engine.stats
        st.seconds += time.perf_counter() - start
        st.calls += len(requests)
        st.prompt_tokens += sum(len(p.tokens) for p in prepared)
        st.cached_prompt_tokens += sum(p.shared for p in prepared)
        return out

    # -- one sequence: the high-level Llama
    def _single(self, prepared: list[_Prepared], done) -> list[list[float]]:
        llm, lib = self.llm, self._lib
        llm.reset()
        llm._ctx.kv_cache_clear()
        prefix = None                     # the shared prefix the context holds

        def logits() -> np.ndarray:
            return np.ctypeslib.as_array(lib.llama_get_logits_ith(llm._ctx.ctx, -1),
                                         shape=(llm.n_vocab(),))

        out = []
        for i, p in enumerate(prepared):
            if p.tokens[:p.shared] != prefix:   # decoded on its own, as the batched path does
                prefix = p.tokens[:p.shared]
                llm.n_tokens = 0
                llm.eval(prefix)
            llm.n_tokens = p.shared             # eval drops the KV cells from n_tokens on
            llm.eval(p.tokens[p.shared:])
            first = _log_softmax_at(logits(), [c[0] for c in p.classes])
            row = []
            for c, toks in enumerate(p.classes):
                total = first[c]
                for k in range(len(toks) - 1):
                    llm.eval([toks[k]])
                    total += _log_softmax_at(logits(), [toks[k + 1]])[0]
                llm.n_tokens = len(p.tokens)    # back to the prompt for the next class
                row.append(total)
            out.append(row)
            done(i)
        return out

    # -- batched: the low-level batch API
    def _batched(self, prepared: list[_Prepared], done) -> list[list[float]]:
        lib, mem = self._lib, self._mem
        lib.llama_memory_clear(mem, True)
        if not prepared:
            return []
        shared = max(p.shared for p in prepared)
        prefix = next(p for p in prepared if p.shared == shared).tokens[:shared]
        # the shared prefix once, in sequence 0 (no logits)
        self._feed([(t, pos, (0,), None) for pos, t in enumerate(prefix)], None)
        out = np.zeros((len(prepared), NUM_LABELS))
        for g0 in range(0, len(prepared), self.n_seq):
            group = list(range(g0, min(len(prepared), g0 + self.n_seq)))
            entries = []        # (token, position, sequences, [(row, class, next token)])
            seqs_used = []
            for j, i in enumerate(group):
                p = prepared[i]
                branches = tuple(1 + j * NUM_LABELS + c for c in range(NUM_LABELS))
                seqs_used += branches
                if p.shared:
                    for s in branches:
                        lib.llama_memory_seq_cp(mem, 0, s, 0, p.shared)
                last = len(p.tokens) - 1
                for pos in range(p.shared, len(p.tokens)):
                    targets = [(i, c, toks[0]) for c, toks in enumerate(p.classes)] \
                        if pos == last else None
                    entries.append((p.tokens[pos], pos, branches, targets))
                for c, toks in enumerate(p.classes):
                    for k in range(len(toks) - 1):
                        entries.append((toks[k], len(p.tokens) + k, (branches[c],),
                                        [(i, c, toks[k + 1])]))
            self._feed(entries, out)
            for s in seqs_used:
                lib.llama_memory_seq_rm(mem, s, -1, -1)
            for i in group:
                done(i)
        return out.tolist()

    def _feed(self, entries: list, out: np.ndarray | None) -> None:
        """Decode `entries` in n_batch slices, adding each target token's log-probability
        (from the logits of the entry that precedes it) to out[row, class]."""
        lib, batch = self._lib, self._batch
        for lo in range(0, len(entries), self._n_batch):
            part = entries[lo:lo + self._n_batch]
            batch.n_tokens = len(part)
            for j, (tok, pos, seqs, targets) in enumerate(part):
                batch.token[j] = tok
                batch.pos[j] = pos
                batch.n_seq_id[j] = len(seqs)
                for k, s in enumerate(seqs):
                    batch.seq_id[j][k] = s
                batch.logits[j] = 1 if targets else 0
            rc = lib.llama_decode(self._ctx, batch)
            if rc != 0:
                raise EmoPillarsError(f"llama_decode failed with code {rc} while scoring "
                                      f"labels ({len(part)} tokens)")
            for j, (_, _, _, targets) in enumerate(part):
                if targets:
                    logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, j),
                                                   shape=(self._n_vocab,))
                    for (row, c, _), lp in zip(targets, _log_softmax_at(
                            logits, [t for _, _, t in targets])):
                        out[row, c] += lp


def scorer_for(engine, cfg: GenerateConfig) -> Scorer:
    """The engine's label scorer: one it was given (`engine.label_scorer`), a llama.cpp one
    made once per engine, or for the scripted engine of the tests a scripted scorer."""
    from .engine import LlamaEngine
    have = getattr(engine, "label_scorer", None)
    if not isinstance(engine, LlamaEngine):
        return have or ScriptedScorer(width=engine.width)
    want = cfg.scoring.n_seq if engine.mode == "batched" else 1
    if have is None or have.n_seq != want:
        if have is not None:
            have.close()
        engine.label_scorer = have = LlamaScorer(engine, cfg.scoring.n_seq)
    return have


# ------------------------------------------------------------------------ the stage

def class_priors(cfg: GenerateConfig, scorer: Scorer, items: list[dict], scores: Store) -> dict:
    """The calibration of this run: method, how many inputs, and the 28 priors."""
    method = cfg.scoring.calibration
    if method == "none":
        return {"method": method, "n": 0, "priors": [0.0] * NUM_LABELS}
    if method in RUN_CALIBRATIONS:
        rows = [scores.get(it["utterance_id"])["logprobs"] for it in items]
    else:
        rows = scorer.score(content_free_requests(cfg))
    out = {"method": method, "n": len(rows), "priors": priors_from(rows) if rows
           else [0.0] * NUM_LABELS}
    if method == "run_standardized":
        out["scales"] = scales_from(rows) if rows else [1.0] * NUM_LABELS
    return out


def run_scoring_stage(stage, items: list[dict], engine, cfg: GenerateConfig, store: Store,
                      rejects: Store) -> dict:
    """pipeline.run_stage's contract for the labels stage by scoring: score every item not
    yet in the raw store (`<stage>_scores.jsonl` beside `store`) in fixed chunks, appended
    chunk by chunk (a kill loses at most one; a resumed run asks the same chunks), then
    calibrate and write the stage's records into `store`. Returns the stage summary, with
    the calibration; `rejects` stays empty (a score is never unparseable)."""
    from tqdm import tqdm

    from .pipeline import CHUNK_PER_SEQUENCE, _ids
    scores = Store(store.path.with_name(f"{stage.name}_scores.jsonl"), stage.key)
    priors_path = store.path.with_name(f"{stage.name}_priors.json")
    scorer = scorer_for(engine, cfg)
    size = max(1, scorer.width) * CHUNK_PER_SEQUENCE
    chunks = [items[lo:lo + size] for lo in range(0, len(items), size)]
    chunks = [c for c in chunks if not all(it[stage.key] in scores for it in c)]
    n_new = sum(it[stage.key] not in store for it in items)
    start = time.perf_counter()
    bar = tqdm(total=sum(map(len, chunks)), desc=f"{stage.name:10s}", unit="item",
               dynamic_ncols=True, disable=not cfg.progress or not chunks)
    for chunk in chunks:
        rows = scorer.score([make_score_request(it, cfg) for it in chunk],
                            on_done=lambda i: bar.update(1))
        scores.append({**_ids(it), "logprobs": lp} for it, lp in zip(chunk, rows)
                      if it[stage.key] not in scores)
    bar.close()
    # the priors the written records used; computed once, before any record is written
    if priors_path.exists() and len(store):
        calibration = json.loads(priors_path.read_text())
        if calibration["method"] in RUN_CALIBRATIONS and calibration["n"] != len(items):
            raise EmoPillarsError(f"{priors_path}: priors of {calibration['n']} utterances, "
                                  f"but the stage has {len(items)}; delete it and {store.path} "
                                  "to label again")
    else:
        calibration = class_priors(cfg, scorer, items, scores)
        tmp = priors_path.with_name(priors_path.name + ".tmp")
        tmp.write_text(json.dumps(calibration) + "\n")
        tmp.replace(priors_path)
    todo = [it for it in items if it[stage.key] not in store]
    store.append(label_record(_ids(it), scores.get(it[stage.key])["logprobs"],
                              calibration["priors"], it.get("target_emotion"), cfg,
                              calibration.get("scales"))
                 for it in todo)
    seconds = time.perf_counter() - start
    return {"items": len(items), "new": n_new, "answered": len(todo), "rejected": 0,
            "seconds": round(seconds, 2),
            "items_per_hour": round(3600 * n_new / seconds, 1) if n_new and seconds else None,
            "calibration": calibration}

