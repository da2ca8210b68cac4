"""How many CPU threads llama.cpp should use here. Standard library only.

llama-cpp-python's own default is half of ``os.cpu_count()`` (it assumes two hardware threads per
core), which on a 2-core VM or a container pinned to a few CPUs leaves half the machine idle:
Gemma-3-270M Q8_0 decoded at 18.5 tokens/s with its default and 32.9 with 2 threads on a 2-core
machine. plug_lite counts the CPUs this process may actually run on:

* the CPU affinity mask (``taskset``, container cpusets), not the host's CPU count;
* a cgroup CPU quota (``cpu.max``; Docker ``--cpus``), rounded up;
* for **decode** (one token at a time, memory-bound) one thread per *physical* core among those
  CPUs: two hyper-threads of one core share its caches and memory port and make decode slower;
* for **prompt processing** (batched, compute-bound) every usable CPU.

``PLUG_LITE_THREADS`` or an explicit ``--threads`` overrides both.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cpus", "physical_cores", "default_threads"]


def _cgroup_quota() -> int | None:
    """CPUs allowed by a cgroup v2 (``cpu.max``) or v1 (``cfs_quota_us``) quota, rounded up."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return max(1, math.ceil(int(text[0]) / int(text[1])))
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        pass
    return None


def usable_cpus() -> list[int]:
    """The logical CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int]) -> int:
    """Distinct physical cores behind ``cpus`` (Linux sysfs topology; else ``len(cpus)``)."""
    cores = set()
    for c in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def default_threads() -> tuple[int, int]:
    """(decode threads, prompt-processing threads) for llama.cpp on this machine."""
    env = os.environ.get("PLUG_LITE_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), int(env)
    cpus = usable_cpus()
    logical = len(cpus) or 1
    decode = physical_cores(cpus)
    quota = _cgroup_quota()
    if quota is not None:
        logical = min(logical, quota)
        decode = min(decode, quota)
    return max(1, decode), max(1, logical)
