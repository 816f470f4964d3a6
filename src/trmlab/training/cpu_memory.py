"""Keep freed CPU memory in the process, so activations do not page-fault on every ACT step.

With glibc's default settings a tensor of more than a few hundred KiB is either its own ``mmap`` or is carved
from heap memory that ``free`` trims back to the kernel; either way the next tensor of that size starts on
fresh pages, and the kernel zero-fills every 4 KiB page on first touch. A TRM step allocates and frees the
same few activation shapes dozens of times, so on CPU this page-fault work was ~45% of a block's time at the
tiny benchmark shape (hidden 64, seq 116, batch 32: 24 ms → 13 ms of CPU time per block with the settings
below; benchmarks/README.md). Serving blocks up to 32 MiB from the heap and not trimming it is what a caching
allocator (or jemalloc/tcmalloc, as PyTorch's CPU tuning guide suggests) does, without a new dependency.

The cost is resident memory: the process keeps its peak heap instead of returning it between steps. Set
``TRMLAB_CPU_MALLOC=default`` to keep glibc's behaviour. CUDA memory is unaffected (PyTorch caches it
already).
"""

from __future__ import annotations

import ctypes
import os

from trmlab.errors import ConfigError

ENV_VAR = "TRMLAB_CPU_MALLOC"
CHOICES = ("keep", "default")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2**20                  # glibc's largest accepted value on 64-bit
TRIM_THRESHOLD = 2**31 - 1                  # mallopt takes an int: 2 GiB, far above any activation

_state: bool | None = None


def keep_cpu_memory() -> bool:
    """Tune glibc malloc once per process as the module docstring says; True when the setting is in force.

    Returns False without changing anything under ``TRMLAB_CPU_MALLOC=default`` or where the C library has no
    ``mallopt`` (musl, macOS). Any other value of the variable is an error.
    """
    global _state
    if _state is not None:
        return _state
    choice = os.environ.get(ENV_VAR, "keep")
    if choice not in CHOICES:
        raise ConfigError(f"{ENV_VAR}={choice!r}: expected one of {', '.join(CHOICES)}")
    _state = choice == "keep" and _set_glibc_thresholds()
    return _state


def _set_glibc_thresholds() -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
