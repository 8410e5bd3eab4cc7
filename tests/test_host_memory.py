"""emopillars_jax.host_memory: XLA:CPU's scratch buffer stops being mapped afresh per call.

Each case runs in a fresh interpreter: the setting only applies before JAX makes its CPU
client, and the glibc settings last for the process.
"""
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_tiny as tt  # noqa: E402

# A program whose temporaries (4096 x 4096 float32 products, 64 MB each) are far above
# glibc's mmap threshold; the page faults of 5 calls after a warm-up are counted.
PROBE = """
import json, resource, sys
import jax, jax.numpy as jnp
from emopillars_jax.host_memory import reuse_host_memory
applied = reuse_host_memory(sys.argv[1] == "reuse")
jax.devices()
again = reuse_host_memory(True)   # the CPU client exists now: nothing changes
f = jax.jit(lambda x: jnp.sum(jnp.tanh(x @ x.T) * ((x + 1.0) @ x.T)))
x = jnp.ones((4096, 256), jnp.float32) / 256
value = float(f(x))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    assert float(f(x)) == value
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"applied": applied, "again": again, "faults": faults,
                  "async": jax.config.values["jax_cpu_enable_async_dispatch"]}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_reuse_keeps_the_scratch_buffer_mapped():
    default, reuse = _probe("default"), _probe("reuse")
    assert not default["applied"] and default["async"]
    assert reuse["applied"] and not reuse["async"]
    assert not default["again"] and not reuse["again"]
    # default: each call maps and zeroes its temporaries again (tens of thousands of pages)
    assert default["faults"] > 10_000, default
    assert reuse["faults"] < default["faults"] / 20, (reuse, default)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
@pytest.mark.parametrize("setting", ["true", "false"])
def test_emopillars_train_applies_the_config_setting(tmp_path, setting):
    """`emopillars train` on the packaged MiniLM, one step: reuse_host_memory is honoured."""
    files = tt.write_dataset(tmp_path / "data", n_train=8, n_dev=4, n_test=4)
    out = subprocess.run(
        [sys.executable, "-m", "emopillars_jax.cli", "train", f"data.train={files['train']}",
         f"data.dev={files['validation']}", "data.test=null", "max_steps=1", "batch_size=4",
         "data.max_length=16", "data.bucket_boundaries=[16]", "progress=false",
         f"out_dir={tmp_path / 'run'}", f"reuse_host_memory={setting}"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("programs run on the calling thread" in out.stderr) == (setting == "true")


def test_a_jax_without_the_private_probe_changes_nothing(monkeypatch, caplog):
    """If JAX moves xla_bridge.backends_are_initialized, the setting is skipped, not fatal."""
    import jax
    from jax._src import xla_bridge
    from emopillars_jax.host_memory import reuse_host_memory

    monkeypatch.delattr(xla_bridge, "backends_are_initialized")
    before = jax.config.values["jax_cpu_enable_async_dispatch"]
    assert reuse_host_memory(True) is False
    assert jax.config.values["jax_cpu_enable_async_dispatch"] == before
    if platform.libc_ver()[0] == "glibc":
        assert "mapped afresh" in caplog.text
