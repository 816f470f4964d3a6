"""keep_cpu_memory: freed activations stay in the process (counted in page faults, not time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trmlab.errors import ConfigError
from trmlab.training import cpu_memory

ROOT = Path(__file__).resolve().parents[1]

# Allocates and frees the activation sizes of the tiny benchmark shape the way a block does, then counts the
# minor page faults of 20 more rounds. Fresh pages (glibc's default) fault ~1000 times per 4 MiB tensor.
PROBE = """
import os, resource, sys
import torch
sys.path.insert(0, {src!r})
from trmlab.training.cpu_memory import keep_cpu_memory
print(keep_cpu_memory())
def block():
    x = torch.randn(32, 116, 64)
    for _ in range(4):
        gate, up = torch.randn(32, 116, 256), torch.randn(32, 116, 256)
        x = x + (torch.nn.functional.silu(gate) * up)[..., :64]
for _ in range(3):
    block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    block()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str) -> tuple[str, int]:
    env = {"TRMLAB_CPU_MALLOC": setting, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(src=str(ROOT / "src"))], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_kept_memory_stops_page_faults_per_step() -> None:
    applied, kept = _faults("keep")
    skipped, default = _faults("default")
    assert (applied, skipped) == ("True", "False")
    assert default > 10_000          # 20 rounds × 8 tensors of ~3.8 MB on fresh pages
    assert kept < default / 20       # the heap is reused


def test_unknown_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_memory, "_state", None)
    monkeypatch.setenv("TRMLAB_CPU_MALLOC", "jemalloc")
    with pytest.raises(ConfigError, match="TRMLAB_CPU_MALLOC='jemalloc': expected one of keep, default"):
        cpu_memory.keep_cpu_memory()
