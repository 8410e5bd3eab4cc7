"""`emopillars data download goemotions`: fetch the official GoEmotions files, verified.

The TSVs come from the GoEmotions data folder in google-research/google-research on
GitHub, the same URLs whose sizes and sha256 tensorflow-datasets pins
(tensorflow_datasets/url_checksums/goemotions.txt). The label names file (emotions.txt)
is not pinned anywhere we know of, so it is checked by content instead: it must list
the 28 taxonomy classes in order.

Each file is written to a temporary name and renamed only once verified, so an
interrupted or corrupted download never leaves a file that looks complete; files already
present and valid are not fetched again.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import EmoPillarsError
from ..taxonomy import LABELS

GOEMOTIONS_BASE_URL = ("https://github.com/google-research/google-research/raw/master/"
                       "goemotions/data/")


@dataclass(frozen=True)
class RemoteFile:
    name: str                   # file name on the server and on disk
    size: int | None            # bytes; None: not pinned
    sha256: str | None          # None: checked by `check` instead
    check: str | None = None    # content check for unpinned files


GOEMOTIONS_FILES = (
    RemoteFile("train.tsv", 3519053,
               "1c254a142be5c00e80d819b9ae1bbd36d94b2eeb8f4b1271846508d57e57d9c5"),
    RemoteFile("dev.tsv", 439059,
               "575489c079c9de1097062a01738f998590d6b7ead66dd1c9fd1d2ba01fd8bc62"),
    RemoteFile("test.tsv", 436706,
               "0587b2dd8b27b97352adbfc3fb083d46005c8946657fdc2b1ca8b1cc7f1f8be4"),
    RemoteFile("emotions.txt", None, None, check="taxonomy_labels"),
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, spec: RemoteFile) -> str | None:
    """None when `path` is the expected file, else why not (one phrase)."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        return f"has {size} bytes, expected {spec.size}"
    if spec.sha256 is not None:
        digest = _sha256(path)
        if digest != spec.sha256:
            return f"has sha256 {digest[:12]}..., expected {spec.sha256[:12]}..."
    if spec.check == "taxonomy_labels":
        try:
            names = [n.strip() for n in path.read_text(encoding="utf-8").split("\n") if n.strip()]
        except UnicodeDecodeError:
            return "is not UTF-8 text"
        if names != list(LABELS):
            return f"lists {len(names)} names, expected the 28 GoEmotions classes in order"
    return None


def _fetch(url: str, target: Path, spec: RemoteFile, timeout: float) -> None:
    from tqdm import tqdm
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                total = spec.size or int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=spec.name,
                          leave=False) as bar:
                    while block := resp.read(1 << 16):
                        out.write(block)
                        bar.update(len(block))
        except urllib.error.HTTPError as exc:
            raise EmoPillarsError(f"{url}: server answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EmoPillarsError(f"cannot download {url}: {reason} (no network? download the "
                                  f"files by hand into {target.parent} and re-run to verify)"
                                  ) from None
        problem = verify(Path(tmp_name), spec)
        if problem:
            raise EmoPillarsError(f"{url}: the downloaded file {problem}; not saved")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def download_goemotions(out: str | Path, base_url: str | None = None,
                        files: tuple[RemoteFile, ...] = GOEMOTIONS_FILES,
                        timeout: float = 60.0, log=print) -> list[Path]:
    """Fetch (or re-verify) the GoEmotions files into `out`; returns their paths."""
    out = Path(out)
    base = base_url or os.environ.get("EMOPILLARS_GOEMOTIONS_URL") or GOEMOTIONS_BASE_URL
    if urllib.parse.urlsplit(base).scheme not in ("http", "https", "file"):
        where = "--base-url" if base_url else "EMOPILLARS_GOEMOTIONS_URL"
        raise EmoPillarsError(f"{where} {base!r}: expected an http://, https:// or file:// URL")
    base = base if base.endswith("/") else base + "/"
    if out.exists() and not out.is_dir():
        raise EmoPillarsError(f"--out {out}: not a folder")
    created = [p for p in (out, *out.parents) if not p.exists()]   # innermost first
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for spec in files:
            target = out / spec.name
            if target.exists():
                problem = verify(target, spec)
                if problem is None:
                    log(f"ok       {target} (already present, verified)")
                    paths.append(target)
                    continue
                log(f"refetch  {target}: {problem}")
            _fetch(base + spec.name, target, spec, timeout)
            how = "sha256" if spec.sha256 else "content"
            log(f"fetched  {target} ({target.stat().st_size:,} bytes, {how} verified)")
            paths.append(target)
    except BaseException:
        # a failed first download leaves no empty folders behind (only those made here)
        for folder in created:
            if any(folder.iterdir()):
                break
            folder.rmdir()
        raise
    return paths
