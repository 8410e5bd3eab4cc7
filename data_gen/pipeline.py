"""`emopillars generate`: run the six stages (resumably, optionally as one shard of N),
merge shards, and assemble the context-less and contextual datasets.

Layout under `out_dir`:
    stages/ (one shard) or shards/SSSSS-of-NNNNN/   stage files, rejects.jsonl, manifest.json
    dataset/{contextless,contextual}/{train,validation,test}.jsonl
    manifest.json                                    resolved config, provenance, timing
"""
from __future__ import annotations

import json
import logging
import platform
import re
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path

from emopillars_jax import __version__
from emopillars_jax.config import dump_config, load_config
from emopillars_jax.errors import EmoPillarsError

from . import prompts
from .config import GenerateConfig
from .corpus import load_corpus, shard_plots
from .engine import Engine, Request
from .labels import process_labels
from .parsing import ParseError
from .stages import STAGES, Stage, character_items, chained_items, context_items, plot_items, \
    stable_hash, utterance_items
from .store import Store, read_jsonl, write_jsonl_atomic

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
_SHARD_DIR = re.compile(r"^(\d{5})-of-(\d{5})$")
# items per engine call, per parallel sequence: a call ends with its slowest answers while
# sequences fall idle, and starts with no cached prompt prefix (see run_stage); a kill
# loses at most the call in progress
CHUNK_PER_SEQUENCE = 4


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stage_dir(out_dir: Path, shard: int, num_shards: int) -> Path:
    return out_dir / "stages" if num_shards == 1 else \
        out_dir / "shards" / f"{shard:05d}-of-{num_shards:05d}"


def versions() -> dict:
    out = {"emopillars": __version__, "python": platform.python_version(),
           "prompt_version": prompts.PROMPT_VERSION}
    try:
        import llama_cpp
        out["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        pass
    return out


def make_provenance(cfg: GenerateConfig, engine: Engine) -> dict:
    # label scoring's settings only when used (they do not change generated answers)
    scoring = {"scoring": cfg.scoring.model_dump(mode="json")} \
        if cfg.labels_method == "score" else {}
    return {**engine.describe(), "prompt_version": prompts.PROMPT_VERSION,
            "prompt_sha256": prompts.PROMPT_SHA256, "answer_mode": cfg.answer_mode,
            "labels_method": cfg.labels_method, **scoring,
            "decoding": cfg.decoding.model_dump(), "retry_temperature": cfg.retry_temperature,
            "llm_seed": cfg.llm.seed, "seed": cfg.seed}


def fingerprint(cfg: GenerateConfig, provenance: dict) -> dict:
    """What must not change between a run and its resumption."""
    return {**{k: v for k, v in provenance.items() if k not in ("engine", "n_ctx")},
            "corpus": cfg.corpus.model_dump(), "max_characters": cfg.max_characters,
            "utterances_non_neutral": cfg.utterances_non_neutral,
            "utterances_neutral": cfg.utterances_neutral,
            "context_fraction": cfg.context_fraction, "max_retries": cfg.max_retries,
            "label_threshold": cfg.label_threshold}


# ------------------------------------------------------------------------ stage runner

def make_request(stage: Stage, item: dict, cfg: GenerateConfig, attempt: int) -> Request:
    messages, schema = stage.build(item, cfg)
    decoding = getattr(cfg.decoding, stage.name)
    seed = cfg.llm.seed
    if attempt:
        decoding = decoding.model_copy(update={"temperature": cfg.retry_temperature})
        seed = stable_hash(cfg.llm.seed, stage.name, item[stage.key], attempt) & 0x7FFFFFFF
    return Request(item[stage.key], tuple(messages), decoding, schema, seed, stage.name)


def stage_runner(name: str, cfg: GenerateConfig):
    """The function that runs stage `name`: run_stage, or for the labels stage with
    labels_method=score label_scoring.run_scoring_stage (same arguments and summary)."""
    if name == "labels" and cfg.labels_method == "score":
        from .label_scoring import run_scoring_stage
        return run_scoring_stage
    return run_stage


def _ids(item: dict) -> dict:
    return {k: item[k] for k in ("plot_id", "character_id", "utterance_id") if k in item}


def run_stage(stage: Stage, items: list[dict], engine: Engine, cfg: GenerateConfig,
              store: Store, rejects: Store) -> dict:
    """Answer every item not yet in `store` or `rejects`, appending results chunk by chunk.

    Chunks are fixed slices of `items` (all of them, not only the pending ones), and a chunk
    a kill left unfinished is asked again whole: as each engine call answers from its
    requests alone, a resumed run makes exactly the calls of an uninterrupted one and writes
    the same records (llama.cpp's answers change with the batch they are decoded in)."""
    from tqdm import tqdm

    def finished(it: dict) -> bool:
        return it[stage.key] in store or f"{stage.name}:{it[stage.key]}" in rejects

    size = max(1, engine.width) * CHUNK_PER_SEQUENCE
    chunks = [items[lo:lo + size] for lo in range(0, len(items), size)]
    chunks = [c for c in chunks if not all(finished(it) for it in c)]
    n_new = sum(not finished(it) for c in chunks for it in c)
    start, n_done, n_rej = time.perf_counter(), 0, 0
    bar = tqdm(total=sum(map(len, chunks)), desc=f"{stage.name:10s}", unit="item",
               dynamic_ncols=True, disable=not cfg.progress or not chunks)
    for chunk in chunks:
        new = [it[stage.key] for it in chunk if not finished(it)]
        done, failed = answer_chunk(stage, chunk, engine, cfg, bar)
        answered = [k for k in new if k in done]
        rejected = [k for k in new if k in failed and k not in done]
        store.append(done[k] for k in answered)
        rejects.append(failed[k] for k in rejected)
        n_done += len(answered)
        n_rej += len(rejected)
    bar.close()
    seconds = time.perf_counter() - start
    return {"items": len(items), "new": n_new, "answered": n_done, "rejected": n_rej,
            "seconds": round(seconds, 2),
            "items_per_hour": round(3600 * n_new / seconds, 1) if n_new and seconds else None}


def answer_chunk(stage: Stage, chunk: list[dict], engine: Engine, cfg: GenerateConfig,
                 bar) -> tuple[dict[str, dict], dict[str, dict]]:
    """Records and rejects by key for one chunk; unparseable answers are asked again (at
    the retry temperature) up to cfg.max_retries times."""
    done: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    todo = chunk
    for attempt in range(cfg.max_retries + 1):
        if not todo:
            break
        # the bar counts first answers as they finish; retries only add to the time
        tick = (lambda i: bar.update(1)) if attempt == 0 else None
        answers = engine.generate([make_request(stage, it, cfg, attempt) for it in todo],
                                  on_done=tick)
        retry = []
        for it, ans in zip(todo, answers):
            key = it[stage.key]
            reason = None
            if ans.finish == "error":
                reason = f"engine error: {ans.error}"
            else:
                try:
                    fields = stage.parse(ans.text, it, cfg)
                except ParseError as exc:
                    reason = f"unparseable: {exc}"
                    if ans.finish == "length":
                        reason += " (answer cut at max_tokens)"
                except Exception as exc:  # noqa: BLE001 - never crash on model output
                    reason = f"parser error: {type(exc).__name__}: {exc}"
                else:
                    done[key] = {**_ids(it), **fields, "raw": ans.text, "attempts": attempt + 1}
            if reason is not None:
                failed[key] = {"id": f"{stage.name}:{key}", "stage": stage.name, **_ids(it),
                               "reason": reason, "raw": ans.text, "attempts": attempt + 1}
                if ans.finish != "error":   # a too-long prompt stays too long
                    retry.append(it)
        todo = retry
    return done, failed


# ------------------------------------------------------------------------ generation

def _load_manifest(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise EmoPillarsError(f"{path}: corrupted manifest (invalid JSON)") from None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _check_resume(manifest: dict | None, fp: dict, where: Path) -> None:
    if manifest is None:
        return
    old = manifest.get("fingerprint", {})
    diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
    if diff:
        raise EmoPillarsError(f"{where}: holds a run with different settings ({', '.join(diff)}); "
                              "use a new out_dir or restore the settings to resume")


def generate(cfg: GenerateConfig, shard: int = 0, num_shards: int = 1,
             engine: Engine | None = None) -> Path:
    """Run (or resume) the six stages for this shard's plots; assemble when unsharded."""
    out = Path(cfg.out_dir)
    plots = shard_plots(load_corpus(cfg.corpus.path, cfg.corpus.format, cfg.corpus.titles,
                                    cfg.corpus.max_plots), shard, num_shards)
    if engine is None:
        from .engine import open_engine
        engine = open_engine(cfg.llm)
    provenance = make_provenance(cfg, engine)
    sdir = stage_dir(out, shard, num_shards)
    sdir.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(cfg, provenance)
    _check_resume(_load_manifest(sdir / "manifest.json"), fp, sdir)
    manifest = {"fingerprint": fp, "provenance": provenance, "shard": shard,
                "num_shards": num_shards, "plots": len(plots), "complete": False,
                "started": now(), "versions": versions(), "config": cfg.model_dump(mode="json"),
                "stages": {}}
    _write_json(sdir / "manifest.json", manifest)
    (sdir / "config.yaml").write_text(dump_config(cfg))

    stores = {name: Store(sdir / f"{name}.jsonl", st.key) for name, st in STAGES.items()}
    rejects = Store(sdir / "rejects.jsonl", "id")
    t0 = time.perf_counter()
    items = plot_items(plots)
    for name in STAGES:
        if name == "characters":
            pass
        elif name == "utterances":
            items = character_items(items, stores["characters"])
        elif name == "labels":
            items = utterance_items(items, stores["utterances"])
        elif name == "context":
            items = context_items(items, stores["labels"], cfg)
        elif name == "cleaning":
            items = chained_items(items, stores["context"], "context")
        else:
            items = chained_items(items, stores["cleaning"], "context_clean")
        manifest["stages"][name] = stage_runner(name, cfg)(STAGES[name], items, engine, cfg,
                                                           stores[name], rejects)
        # the calibration's 28 priors (and scales) are in the manifest, not the log
        log.info("%s: %s", name, {k: v if k != "calibration" else
                                  f"{v['method']} on {v['n']} inputs"
                                  for k, v in manifest["stages"][name].items()})
    manifest.update(complete=True, finished=now(), seconds=round(time.perf_counter() - t0, 2),
                    engine_stats=vars(engine.stats))
    _write_json(sdir / "manifest.json", manifest)
    if num_shards == 1:
        assemble(out, [sdir], cfg, provenance)
    return out


def shard_dirs(out: Path) -> list[Path]:
    """All shard folders of one sharded run, checked complete and consistent."""
    found = sorted(p for p in (out / "shards").glob("*-of-*") if _SHARD_DIR.match(p.name))
    if not found:
        raise EmoPillarsError(f"{out}/shards: no shard folders to merge (run `emopillars "
                              "generate --shard i --num-shards N` first)")
    counts = {int(_SHARD_DIR.match(p.name).group(2)) for p in found}
    if len(counts) != 1:
        raise EmoPillarsError(f"{out}/shards: shards of different runs ({sorted(counts)} shards)")
    n = counts.pop()
    have = {int(_SHARD_DIR.match(p.name).group(1)) for p in found}
    missing = sorted(set(range(n)) - have)
    incomplete = [p.name for p in found if not (_load_manifest(p / "manifest.json") or {})
                  .get("complete")]
    if missing or incomplete:
        raise EmoPillarsError(f"{out}/shards: cannot merge: missing shards {missing}, "
                              f"unfinished shards {incomplete}")
    return found


def merge(cfg: GenerateConfig) -> Path:
    """Combine the shards under cfg.out_dir into one dataset."""
    out = Path(cfg.out_dir)
    dirs = shard_dirs(out)
    provs = [_load_manifest(d / "manifest.json")["provenance"] for d in dirs]
    if any(p != provs[0] for p in provs):
        raise EmoPillarsError(f"{out}/shards: shards were generated with different models, "
                              "prompts or decoding settings")
    assemble(out, dirs, cfg, provs[0])
    return out


# ------------------------------------------------------------------------ dataset

def assign_splits(plot_ids: list[str], ratios, seed: int) -> dict[str, str]:
    """Plots -> split, by a seeded hash order and the ratios (largest remainder); every split
    with a positive ratio gets at least one plot when there are enough plots."""
    order = sorted(plot_ids, key=lambda p: (stable_hash("split", seed, p), p))
    n = len(order)
    raw = [r * n for r in ratios]
    counts = [int(x) for x in raw]
    for i in sorted(range(3), key=lambda i: raw[i] - counts[i], reverse=True)[:n - sum(counts)]:
        counts[i] += 1
    for i in range(3):   # a tiny run still gets validation/test plots
        if ratios[i] > 0 and counts[i] == 0:
            donor = max(range(3), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    out, pos = {}, 0
    for split, c in zip(SPLITS, counts):
        for p in order[pos:pos + c]:
            out[p] = split
        pos += c
    return out


def _merged(dirs: list[Path], name: str, key: str) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for d in dirs:
        for r in read_jsonl(d / f"{name}.jsonl"):
            rows[r[key]] = r
    return rows


def build_records(dirs: list[Path], cfg: GenerateConfig, provenance: dict) -> tuple[list, list]:
    """Context-less and contextual records from the stage files of `dirs` (sorted by id)."""
    recs = {name: _merged(dirs, name, st.key) for name, st in STAGES.items()}
    plots = [{"plot_id": r["plot_id"], "title": r.get("title", "")}
             for r in sorted(recs["characters"].values(), key=lambda r: r["plot_id"])]
    utts = utterance_items(character_items(plots, recs["characters"]), recs["utterances"])
    prov = {**provenance, "label_threshold": cfg.label_threshold}
    contextless, contextual = [], []
    for u in sorted(utts, key=lambda u: u["utterance_id"]):
        lab = recs["labels"].get(u["utterance_id"])
        if lab is None:
            continue
        pl = process_labels([tuple(p) for p in lab["emotions"]], cfg.label_threshold)
        if pl.empty:
            continue
        ctx = recs["context"].get(u["utterance_id"])
        used = [d["label"] for d in pl.all_emotions_mapped if d["score"] >= cfg.label_threshold] \
            if ctx else []
        base = {"plot_id": u["plot_id"], "title": u["title"], "character_id": u["character_id"],
                "utterance_id": u["utterance_id"], "character": u["character"],
                "utterance": u["utterance"], "text": u["utterance"],
                "utterance_kind": u["kind"], "target_emotion": u["target_emotion"],
                "primary_emotion": pl.primary_emotion, "expressiveness": pl.expressiveness,
                "all_emotions": pl.all_emotions, "all_emotions_mapped": pl.all_emotions_mapped,
                "raw_emotion_explication": lab["raw"],
                "emotions_used_to_generate_context": used,
                "labels": pl.labels, "targets": pl.targets}
        if "distribution" in lab:    # label scoring: the 28 class probabilities
            base["distribution"] = lab["distribution"]
        contextless.append({**base, "provenance": prov})
        clean, rew = recs["cleaning"].get(u["utterance_id"]), recs["rewriting"].get(u["utterance_id"])
        if ctx and clean and rew:
            contextual.append({**base, "utterance": rew["rewritten"], "text": rew["rewritten"],
                               "original_utterance": u["utterance"],
                               "context": clean["context_clean"],
                               "context_raw": ctx["context"], "provenance": prov})
    return contextless, contextual


def assemble(out: Path, dirs: list[Path], cfg: GenerateConfig, provenance: dict) -> dict:
    contextless, contextual = build_records(dirs, cfg, provenance)
    plot_ids = sorted({r["plot_id"] for d in dirs for r in read_jsonl(d / "characters.jsonl")})
    counts = {}
    for name, rows, ratios in (("contextless", contextless, cfg.splits_contextless),
                               ("contextual", contextual, cfg.splits_contextual)):
        split_of = assign_splits(plot_ids, ratios, cfg.seed)
        counts[name] = {}
        for split in SPLITS:
            sel = [r for r in rows if split_of.get(r["plot_id"]) == split]
            counts[name][split] = write_jsonl_atomic(out / "dataset" / name / f"{split}.jsonl", sel)
        empty = [s for s, r in zip(SPLITS, ratios) if r > 0 and not counts[name][s]]
        if empty and rows:
            log.warning("%s dataset: no examples in %s (splits are by plot: with %d plots "
                        "some get none, or theirs gave no examples)", name, ", ".join(empty),
                        len(plot_ids))
    shard_manifests = [_load_manifest(d / "manifest.json") or {} for d in dirs]
    stage_totals = {}
    for m in shard_manifests:
        for name, st in m.get("stages", {}).items():
            tot = stage_totals.setdefault(name, {"answered": 0, "rejected": 0, "seconds": 0.0})
            tot["answered"] += st.get("answered", 0)
            tot["rejected"] += st.get("rejected", 0)
            tot["seconds"] = round(tot["seconds"] + st.get("seconds", 0.0), 2)
    _write_json(out / "manifest.json", {
        "assembled": now(), "provenance": provenance, "versions": versions(),
        "config": cfg.model_dump(mode="json"), "shards": [d.name for d in dirs],
        "plots": len(plot_ids), "dataset": counts, "stage_timing_last_session": stage_totals})
    (out / "config.yaml").write_text(dump_config(cfg))
    return counts


# ------------------------------------------------------------------------ CLI

def run_cli(args) -> int:
    cfg = load_config(GenerateConfig, args.config, args.overrides)
    if cfg.merge:
        out = merge(cfg)
    else:
        out = generate(cfg, args.shard, args.num_shards)
        if args.num_shards > 1:
            again = shlex.join(["emopillars", "generate", "-c", str(args.config),
                                *args.overrides, "merge=true"])
            print(f"shard {args.shard} of {args.num_shards} done under {out}/shards; when all "
                  f"are done: {again}")
            return 0
    counts = json.loads((out / "manifest.json").read_text())["dataset"]
    for name, c in counts.items():
        print(f"{name:12s} " + "  ".join(f"{k}={v}" for k, v in c.items()))
    print(f"dataset: {out / 'dataset'}")
    return 0
