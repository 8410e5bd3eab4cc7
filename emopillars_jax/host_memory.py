"""Keep XLA:CPU's per-step scratch memory mapped between steps (the CPU backend only).

XLA:CPU allocates each program's temporary buffer afresh on every run (530 MB for a MiniLM-L6
training step at batch 32, length 48) and frees it afterwards. glibc serves a block that
large with a new mmap and unmaps it on free, so the kernel faults it in and zeroes it 4 KB at
a time on every step: about 135,000 page faults and a quarter of the step on 2 cores.

Two settings stop that: XLA runs programs on the calling thread (JAX's CPU async dispatch off),
so the buffer comes from glibc's main arena, which can grow without mmap; and glibc is told to
neither mmap large blocks nor give freed memory back (mallopt), so the next step reuses it.
Threads keep their own arenas: forcing one arena on all of them (glibc tunables) made the
step as fast but multi-threaded tokenization 3-4x slower. The cost is memory the process
keeps after its peak (up to 2 GiB of free heap).
"""
from __future__ import annotations

import ctypes
import logging
import platform

import jax

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4   # glibc <malloc.h>
_KEEP_FREE_BYTES = 2**31 - 1              # mallopt takes an int: the most it can be told


def reuse_host_memory(enabled: bool = True) -> bool:
    """Apply both settings when the default backend is the CPU; returns whether it did.

    Call it after `jax.distributed` starts and before anything else touches JAX devices:
    async dispatch can only be turned off before JAX creates its CPU client. Later calls (a
    second run in the same process) find the client already made and change nothing.
    """
    if not enabled or platform.libc_ver()[0] != "glibc":
        return False
    try:   # JAX has no public "are backends initialised?" yet
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:   # another JAX: it cannot be told whether the client exists
        log.warning("this JAX has no xla_bridge.backends_are_initialized; "
                    "XLA's scratch memory is mapped afresh every step")
        return False
    if backends_are_initialized():
        return False
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    if jax.default_backend() != "cpu":   # GPU/TPU: the flag only touches the unused CPU client
        return False
    if not keep_freed_memory():
        return False
    log.info("CPU backend: programs run on the calling thread, freed memory is kept for reuse")
    return True


def keep_freed_memory() -> bool:
    """Tell glibc to serve large blocks from its heap and keep freed memory (mallopt)."""
    libc = ctypes.CDLL(None)
    if libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE_BYTES):
        return True
    log.warning("glibc refused mallopt; XLA's scratch memory is mapped afresh every step")
    return False
