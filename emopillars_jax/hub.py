"""Publishing to the Hugging Face Hub, results tables and dataset cards.

`emopillars publish FOLDER --repo-id user/name [--repo-type model|dataset] [--private]
[--dry-run]` creates the repository (if needed) and uploads the folder in one commit with
huggingface_hub (`create_repo` + `upload_folder`). The token comes from HF_TOKEN or the
login cached by `hf auth login` (`huggingface_hub.get_token()`); HF_ENDPOINT points at
another Hub. A dataset folder without a README.md gets a generated dataset card first.

Also here, because both the model card (export.py) and the benchmark runner show them:
`render_results_table` (metric, threshold, per-class F1) and the dataset card generator.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
from collections import Counter
from pathlib import Path

import yaml

from .errors import EmoPillarsError, reading_text
from .taxonomy import DEFINITIONS, LABELS

REPO_TYPES = ("model", "dataset")
# any one of them makes a loadable tokenizer (tokenizer.model: SentencePiece)
TOKENIZER_MAIN_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")


# --- results table -----------------------------------------------------------------------
def _f(x) -> str:
    return "-" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def render_results_table(result: dict) -> str:
    """Markdown for one evaluation result.

    `result` keys: metric and value (the headline), threshold (None when each example
    takes its most probable class), optionally benchmark, split, n_examples, macro_f1,
    micro_f1, weighted_f1, *_std (over folds), folds, per_class_f1 {class: F1}, support
    {class: count}, per_class_thresholds {class: threshold}, and for a prior-shift
    adjusted argmax: decision, value_without_prior_shift, estimated_dev_priors, and
    calibration {method, n, temperature, nll_before, nll_after}; checkpoint (best | latest |
    a step) and checkpoint_step.
    """
    rows = [("metric", result.get("metric", "-")),
            ("value", _f(result.get("value")) + (f" ± {result['value_std']:.4f}"
                                                 if result.get("value_std") is not None else ""))]
    for key in ("benchmark", "split", "n_examples", "folds"):
        if result.get(key) is not None:
            rows.append((key, _f(result[key])))
    if result.get("threshold") is not None:
        rows.append(("threshold", _f(result["threshold"])))
    elif result.get("decision") == "argmax":
        rows.append(("threshold", "none (most probable class per example)"))
    elif result.get("decision"):
        rows.append(("decision", result["decision"]))
    if result.get("checkpoint"):
        step = result.get("checkpoint_step")
        rows.append(("checkpoint", result["checkpoint"] +
                     (f" (step {step})" if step is not None else "")))
    if result.get("calibration"):
        cal = result["calibration"]
        rows.append(("calibration", f"{cal['method']} on {cal['n']} held-out training "
                     f"examples: temperature {cal['temperature']:.2f}, NLL "
                     f"{cal['nll_before']:.3f} -> {cal['nll_after']:.3f}"))
    if result.get("value_without_prior_shift") is not None:
        rows.append(("value with the plain argmax", _f(result["value_without_prior_shift"])))
    if result.get("estimated_dev_priors"):
        rows.append(("estimated dev class priors", ", ".join(
            f"{k} {v:.3f}" for k, v in result["estimated_dev_priors"].items())))
    for key in ("macro_f1", "micro_f1", "weighted_f1", "emocontext_f1"):
        if result.get(key) is not None and key != result.get("metric"):
            rows.append((key, _f(result[key])))
    if result.get("train_seconds") is not None:
        rows.append(("training time", f"{result['train_seconds'] / 60:.1f} min"))
    out = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    per_class = result.get("per_class_f1") or {}
    if per_class:
        support = result.get("support") or {}
        thresholds = result.get("per_class_thresholds") or {}
        cols = ["class", "F1"] + (["support"] if support else []) + \
               (["threshold"] if thresholds else [])
        out += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for cls, f1 in per_class.items():
            cells = [cls, _f(f1)] + ([_f(support.get(cls))] if support else []) + \
                    ([_f(thresholds.get(cls))] if thresholds else [])
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def add_results_section(folder: str | Path, result: dict, title: str = "Results") -> Path:
    """Put a results table into FOLDER/README.md (a model card), replacing an earlier
    section of the same title, so re-running an evaluation does not duplicate it."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        raise EmoPillarsError(f"{path}: no model card to add results to")
    start, end = f"<!-- emopillars-results: {title} -->", "<!-- /emopillars-results -->"
    section = f"{start}\n## {title}\n\n{render_results_table(result)}{end}\n"
    text = path.read_text(encoding="utf-8")
    if start in text:
        head, _, rest = text.partition(start)
        text = head + section + rest.partition(end)[2].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")
    return path


# --- dataset card ------------------------------------------------------------------------
SPLIT_ORDER = ("train", "validation", "dev", "test")


def _jsonl_records(path: Path, limit: int | None = None):
    with reading_text(path), open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EmoPillarsError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if limit and n >= limit:
                return


def _feature(values: list, name: str):
    """The datasets-YAML feature of a column from sample values (None: cannot be typed)."""
    values = [v for v in values if v is not None]
    if name == "labels" and all(isinstance(v, list) for v in values):
        return {"list": {"class_label": {"names": {str(i): n for i, n in enumerate(LABELS)}}}}
    kinds = {type(v) for v in values}
    if not values or kinds == {str}:
        return {"dtype": "string"}
    if kinds == {bool}:
        return {"dtype": "bool"}
    if kinds == {int}:
        return {"dtype": "int64"}
    if kinds <= {int, float}:
        return {"dtype": "float64"}
    if kinds == {list}:
        inner = _feature([x for v in values for x in v], "")
        if inner is None:
            return None
        return {"list": inner["dtype"] if set(inner) == {"dtype"} else
                inner.get("struct", inner)}
    if kinds == {dict}:
        keys = list(dict.fromkeys(k for v in values for k in v))
        fields = []
        for k in keys:
            sub = _feature([v.get(k) for v in values], k)
            if sub is None:
                return None
            fields.append({"name": k, **sub})
        return {"struct": fields}
    return None   # mixed types (e.g. [name, score] pairs): the Hub viewer cannot show them


def discover_configs(folder: Path) -> dict[str, dict[str, Path]]:
    """{config: {split: file}} from FOLDER/<config>/<split>.jsonl (or FOLDER/<split>.jsonl)."""
    configs: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.rglob("*.jsonl")):
        rel = path.relative_to(folder)
        if any(p.startswith(".") for p in rel.parts) or len(rel.parts) > 2:
            continue
        config = rel.parts[0] if len(rel.parts) == 2 else "default"
        configs.setdefault(config, {})[path.stem] = path
    for config, splits in configs.items():
        configs[config] = dict(sorted(splits.items(), key=lambda kv: (
            SPLIT_ORDER.index(kv[0]) if kv[0] in SPLIT_ORDER else len(SPLIT_ORDER), kv[0])))
    return configs


def _provenance(folder: Path) -> dict:
    """provenance.json in the folder, or the generation run's manifest.json beside or above
    it (`emopillars generate` writes OUT/manifest.json and OUT/dataset/<config>/...)."""
    for path in (folder / "provenance.json", folder / "manifest.json",
                 folder.parent / "manifest.json"):
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise EmoPillarsError(f"{path}: not JSON ({exc.msg})") from None
            if path.name == "manifest.json":
                data = {**data.get("provenance", {}),
                        **({"versions": data["versions"]} if data.get("versions") else {})}
            return data
    return {}


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def dataset_card(folder: str | Path, provenance: dict | None = None,
                 pretty_name: str = "Emo Pillars synthetic emotion dataset",
                 license: str = "unknown", sample: int = 2000) -> str:
    """README.md (YAML front matter + prose) for a generated dataset folder."""
    folder = Path(folder)
    configs = discover_configs(folder)
    if not configs:
        raise EmoPillarsError(f"{folder}: no JSON Lines files (expected <config>/<split>.jsonl, "
                              "e.g. contextless/train.jsonl)")
    provenance = {**_provenance(folder), **(provenance or {})}
    meta_configs, infos, counts_md, notes = [], [], [], []
    total = 0
    label_counts: dict[str, Counter] = {}   # config -> class -> train examples
    for i, (config, splits) in enumerate(configs.items()):
        entry = {"config_name": config,
                 "data_files": [{"split": s, "path": p.relative_to(folder).as_posix()}
                                for s, p in splits.items()]}
        if i == 0:
            entry["default"] = True
        meta_configs.append(entry)
        rows = list(_jsonl_records(next(iter(splits.values())), sample))
        columns = list(dict.fromkeys(k for r in rows for k in r))
        features = []
        for col in columns:
            feat = _feature([r.get(col) for r in rows], col)
            if feat is None:
                notes.append(f"`{config}`: column `{col}` mixes value types, so no feature "
                             "types are declared for this config")
                features = None
                break
            features.append({"name": col, **feat})
        split_sizes, label_counts[config] = {}, Counter()
        for split, path in splits.items():
            n = 0
            for rec in _jsonl_records(path):
                n += 1
                if split == "train" and isinstance(rec.get("labels"), list):
                    label_counts[config].update(LABELS[j] for j in rec["labels"]
                                        if isinstance(j, int) and 0 <= j < len(LABELS))
            split_sizes[split] = n
        total += sum(split_sizes.values())
        info = {"config_name": config}
        if features is not None:
            info["features"] = features
        info["splits"] = [{"name": s, "num_examples": n} for s, n in split_sizes.items()]
        infos.append(info)
        counts_md.append(f"| {config} | " + ", ".join(f"{s}: {n:,}" for s, n in
                                                      split_sizes.items()) +
                         f" | {', '.join(f'`{c}`' for c in columns)} |")
    front = {"license": provenance.get("license", license), "language": ["en"],
             "pretty_name": pretty_name, "task_categories": ["text-classification"],
             "task_ids": ["multi-label-classification"],
             "tags": ["emotion", "synthetic", "emo-pillars", "goemotions-taxonomy"],
             "size_categories": [_size_category(total)],
             "configs": meta_configs, "dataset_info": infos}
    body = [f"# {pretty_name}", "",
            "Utterances of characters in story plots, written and labelled by an instruction-"
            "tuned LLM (run offline with llama.cpp) following the Emo Pillars method (Shvets, "
            "Findings of ACL 2025), for training fine-grained, multi-label emotion classifiers "
            "over the 28 GoEmotions classes. `contextless` examples are read from the "
            "utterance alone; `contextual` examples pair a context (why the character speaks) "
            "with an utterance rewritten to be ambiguous without it.", "",
            "## Configurations and splits", "",
            "| config | examples | columns |", "|---|---|---|", *counts_md, "",
            "Splits are made by plot, so no story appears in two splits. `labels` holds class "
            "indices into the label list below.", "",
            "## Labels", "",
            "| id | label | definition | " + " | ".join(f"train: {c}" for c in configs) + " |",
            "|---|---|---|" + "---|" * len(configs),
            *[f"| {i} | {n} | {DEFINITIONS[n]} | " +
              " | ".join(f"{label_counts[c].get(n, 0):,}" for c in configs) + " |"
              for i, n in enumerate(LABELS)], ""]
    if provenance:
        body += ["## Provenance", "", "```json", json.dumps(provenance, indent=1,
                                                              ensure_ascii=False), "```", ""]
    body += ["## Limitations", "",
             "Labels come from one LLM, not from human annotators; the neutral class is rare "
             "and less diverse than the others; English only. Check the teacher model's and "
             "the story corpus's licences before reuse.", ""]
    if notes:
        body += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    body.append(f"Card generated by `emopillars` on {_dt.date.today().isoformat()}.")
    return ("---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n"
            + "\n".join(body) + "\n")


def write_dataset_card(folder: str | Path, **kwargs) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(dataset_card(folder, **kwargs), encoding="utf-8")
    return path


# --- upload ------------------------------------------------------------------------------
def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise EmoPillarsError("publishing needs huggingface_hub: pip install "
                              "'emopillars[hub]'") from None
    return huggingface_hub


def upload_plan(folder: str | Path) -> list[tuple[str, int]]:
    """(path in repo, bytes) for every file upload_folder would send (same ignore rules)."""
    hub = _hub()
    from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
    folder = Path(folder)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    kept = hub.utils.filter_repo_objects(files, ignore_patterns=list(DEFAULT_IGNORE_PATTERNS))
    return [(f, (folder / f).stat().st_size) for f in kept]


def check_folder(folder: Path, repo_type: str) -> list[str]:
    """Problems that stop a publish (one phrase each); warnings are logged by the caller."""
    if not folder.is_dir():
        return [f"{folder}: not a folder"]
    if repo_type == "model":
        problems = []
        if not (folder / "config.json").is_file():
            problems.append(f"{folder}: no config.json (expected a folder made by "
                            "`emopillars export`)")
        if not any(folder.glob("*.safetensors")) and not (folder / "pytorch_model.bin").is_file():
            problems.append(f"{folder}: no *.safetensors weights")
        # a model without its tokenizer cannot be used from the Hub
        if not any((folder / name).is_file() for name in TOKENIZER_MAIN_FILES):
            problems.append(f"{folder}: no tokenizer files (expected one of "
                            f"{', '.join(TOKENIZER_MAIN_FILES)}, as `emopillars export` "
                            "writes)")
        return problems
    if (folder / "manifest.json").is_file() and (folder / "dataset").is_dir():
        # the run's stages/ and shards/ would be uploaded too
        return [f"{folder}: a generation run folder, not its dataset; publish "
                f"{folder / 'dataset'} instead"]
    if not discover_configs(folder):
        return [f"{folder}: no <config>/<split>.jsonl files to publish as a dataset"]
    return []


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def network_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of whichever HTTP client huggingface_hub uses."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx", "requests"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        errors += [getattr(module, attr) for attr in ("HTTPError", "RequestException")
                   if isinstance(getattr(module, attr, None), type)]
    return tuple(errors)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def publish(folder: str | Path, repo_id: str, repo_type: str = "model", private: bool = False,
            dry_run: bool = False, token: str | None = None, endpoint: str | None = None,
            commit_message: str | None = None, log=print) -> dict:
    """Create `repo_id` (if needed) and upload `folder` to it; dry_run only lists files."""
    folder = Path(folder)
    if repo_type not in REPO_TYPES:
        raise EmoPillarsError(f"repo type {repo_type!r}: expected one of {list(REPO_TYPES)}")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise EmoPillarsError(f"--repo-id {repo_id!r}: expected user/name")
    _hub()
    from huggingface_hub.utils import validate_repo_id
    try:
        validate_repo_id(repo_id)
    except ValueError as exc:   # HFValidationError: the characters the Hub accepts
        raise EmoPillarsError(f"--repo-id {repo_id!r}: {one_line(exc)}") from None
    problems = check_folder(folder, repo_type)
    if problems:
        raise EmoPillarsError("; ".join(problems))
    card_missing = not (folder / "README.md").is_file()
    plan = upload_plan(folder)
    if card_missing and repo_type == "dataset":
        if dry_run:
            plan.append(("README.md", len(dataset_card(folder).encode("utf-8"))))
            plan.sort()
        else:
            log(f"wrote dataset card {write_dataset_card(folder)}")
            plan = upload_plan(folder)
    elif card_missing:
        log(f"warning: {folder} has no README.md model card")
    total = sum(size for _, size in plan)
    if dry_run:
        where = f"{'private ' if private else ''}{repo_type} repo {repo_id}"
        log(f"dry run: would upload {len(plan)} file(s), {_human(total)}, to {where}")
        for path, size in plan:
            log(f"  {size:>14,}  {path}")
        return {"dry_run": True, "files": plan, "total_bytes": total}
    hub = _hub()
    token = token or hub.get_token()
    if not token:
        raise EmoPillarsError("no Hugging Face token: set HF_TOKEN or run `hf auth login` "
                              "(a token with write access)")
    api = hub.HfApi(endpoint=endpoint, token=token)
    from huggingface_hub.errors import HfHubHTTPError
    try:
        # private=None leaves the visibility to the Hub (an organisation may default to private)
        url = api.create_repo(repo_id, repo_type=repo_type, private=private or None,
                              exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                                 commit_message=commit_message or
                                 f"Upload {folder.name} with emopillars")
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        hint = {401: " (token missing or invalid: set HF_TOKEN or run `hf auth login`)",
                403: " (the token cannot write to this namespace)"}.get(status, "")
        raise EmoPillarsError(f"the Hub refused {repo_type} repo {repo_id}: HTTP {status}: "
                              f"{one_line(exc)}{hint}") from None
    except ValueError as exc:   # e.g. README.md metadata rejected by the Hub's validator
        raise EmoPillarsError(f"{repo_id}: {one_line(exc)}") from None
    except network_errors() as exc:   # no network, DNS, refused connection, offline mode
        raise EmoPillarsError(f"cannot reach the Hub at {api.endpoint}: {one_line(exc)} "
                              "(no network? HF_HUB_OFFLINE set?)") from None
    log(f"uploaded {len(plan)} file(s), {_human(total)}, to {url}")
    return {"dry_run": False, "url": str(url), "commit": getattr(info, "oid", None),
            "files": plan, "total_bytes": total}


def run_publish(args: argparse.Namespace) -> int:
    """CLI entry of `emopillars publish`."""
    publish(args.folder, args.repo_id, repo_type=args.repo_type, private=args.private,
            dry_run=args.dry_run)
    return 0
