"""The paper's released dataset as a data source: `emopillars data download emopillars`.

The authors published their synthetic data on the Hugging Face Hub as the dataset repo
alex-shvets/EmoPillars. This fetches one revision of it with huggingface_hub's
`snapshot_download` into a folder (default data/emopillars) and writes OUT/manifest.json:
the repo, the requested and the resolved revision (a commit sha), each file's path, size and
sha256, and when it was downloaded. The revision is resolved to a commit first and that
commit is downloaded, so the manifest names exactly the files on disk. Nothing is created
when the Hub cannot be reached or the repo cannot be read: one line says why.

The files are read for training by emopillars_jax/data.py (format `emopillars`).
"""
from __future__ import annotations

import datetime as _dt
import json
import time
from contextlib import contextmanager
from pathlib import Path

from .benchmarks.download import _sha256
from .errors import EmoPillarsError
from .hub import network_errors, one_line

RELEASE_REPO_ID = "alex-shvets/EmoPillars"
DEFAULT_OUT = "data/emopillars"
MANIFEST = "manifest.json"


def _huggingface_hub():
    try:
        import huggingface_hub
    except ImportError:
        raise EmoPillarsError("downloading the release needs huggingface_hub: pip install "
                              "'emopillars[hub]'") from None
    return huggingface_hub


@contextmanager
def _hub_errors(repo_id: str, revision: str, endpoint: str):
    """huggingface_hub's exceptions -> one EmoPillarsError line saying what to do."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    repo = f"dataset repo {repo_id} at {endpoint}"
    login = "set HF_TOKEN or run `hf auth login`"
    try:
        yield
    except OfflineModeIsEnabled:   # before the network errors: it is a ConnectionError
        raise EmoPillarsError(f"HF_HUB_OFFLINE is set, so {repo} cannot be read: unset it "
                              "to download") from None
    except RevisionNotFoundError:
        raise EmoPillarsError(f"{repo} has no revision {revision!r} (expected a branch, tag "
                              "or commit of the repo)") from None
    except GatedRepoError:
        raise EmoPillarsError(f"{repo} is gated: accept its conditions on the Hub with your "
                              f"account, then {login}") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        if isinstance(exc, RepositoryNotFoundError) or status in (401, 403, 404):
            raise EmoPillarsError(f"cannot read {repo}: HTTP {status}: not found, or private "
                                  f"and not readable with your token (check the name; "
                                  f"{login})") from None
        raise EmoPillarsError(f"{repo}: the Hub answered HTTP {status}: {one_line(exc)} "
                              "(try again later)") from None
    except LocalEntryNotFoundError as exc:   # the connection dropped between the files
        raise EmoPillarsError(f"downloading {repo} stopped: {one_line(exc)} (re-run the "
                              "command to finish; files already fetched are kept)") from None
    except ValueError as exc:   # HFValidationError: a malformed repo id or revision
        raise EmoPillarsError(f"{repo_id}: {one_line(exc)}") from None
    except network_errors() as exc:   # no network, DNS, refused connection
        raise EmoPillarsError(f"cannot reach the Hub at {endpoint}: {one_line(exc)} (no "
                              "network? run it again when online, or set --endpoint / "
                              "HF_ENDPOINT to a reachable mirror)") from None


def download_release(out: str | Path = DEFAULT_OUT, revision: str | None = None,
                     endpoint: str | None = None, repo_id: str = RELEASE_REPO_ID,
                     log=print) -> dict:
    """Fetch `repo_id` at `revision` (default main) into `out`; returns the manifest."""
    hub = _huggingface_hub()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EmoPillarsError(f"--out {out}: not a folder")
    requested = revision or "main"
    api = hub.HfApi(endpoint=endpoint)
    started = time.time()
    with _hub_errors(repo_id, requested, api.endpoint):
        commit = api.dataset_info(repo_id, revision=requested).sha
        if not commit:
            raise EmoPillarsError(f"dataset repo {repo_id} at {api.endpoint}: the Hub named "
                                  f"no commit for revision {requested!r}")
        log(f"{repo_id} {requested} -> commit {commit}")
        hub.snapshot_download(repo_id, repo_type="dataset", revision=commit,
                              local_dir=out, endpoint=api.endpoint)
    # the tree listing snapshot_download cached for this commit: exactly the repo's files
    tree = hub.get_cached_repo_tree(repo_id, repo_type="dataset", revision=commit,
                                    local_dir=out)
    files = []
    for entry in sorted(tree, key=lambda f: f.path):
        path = out / entry.path
        size, digest = path.stat().st_size, _sha256(path)
        expected = entry.lfs.sha256 if entry.lfs is not None else None
        if size != entry.size or (expected and digest != expected):
            raise EmoPillarsError(f"{path}: has {size:,} bytes, sha256 {digest[:12]}..., the "
                                  f"Hub lists {entry.size:,} bytes"
                                  + (f", sha256 {expected[:12]}..." if expected else "")
                                  + "; delete it and download again")
        files.append({"path": entry.path, "size": size, "sha256": digest})
    if any(f["path"] == MANIFEST for f in files):
        raise EmoPillarsError(f"{repo_id} has its own {MANIFEST}; download it into a "
                              "folder of its own with huggingface_hub instead")
    manifest = {"repo_id": repo_id, "repo_type": "dataset", "endpoint": api.endpoint,
                "requested_revision": requested, "commit": commit,
                "downloaded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(
                    timespec="seconds"),
                "seconds": round(time.time() - started, 1),
                "huggingface_hub": hub.__version__, "files": files}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    total = sum(f["size"] for f in files)
    log(f"downloaded {len(files)} file(s), {total:,} bytes, to {out} (commit {commit[:12]}, "
        f"sha256 in {out / MANIFEST})")
    return manifest
