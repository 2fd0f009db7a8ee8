"""What the runner learns about the machine and the processes it measures.

Memory and CPU time come from /proc (Linux), with psutil as a fallback
elsewhere; CPU pinning, file-descriptor and port limits, and the machine
description stored in the results.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .scenarios import NOISE


def proc_status(pid: int) -> Dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
        return out
    except OSError:
        pass
    try:
        import psutil

        mi = psutil.Process(pid).memory_info()
        out["VmRSS"] = mi.rss
        out["VmHWM"] = getattr(mi, "peak_wset", None) or mi.rss
    except Exception:
        pass
    return out


def cpu_ticks(pid: int) -> Optional[Tuple[int, int]]:
    """User and kernel clock ticks of *pid* so far (10 ms sampling)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds(pid: int) -> Optional[float]:
    """CPU time used by *pid* so far (ns resolution where schedstat exists)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:
        return None


def system_busy_seconds() -> Optional[float]:
    """CPU seconds all tasks on the machine ran so far, plus hypervisor steal.

    From /proc/stat: user + nice + system + steal.  Interrupt and softirq
    time are left out: loopback TCP work shows up there and belongs to the
    processes being measured, not to anyone else.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        steal = fields[7] if len(fields) > 7 else 0
        return (fields[0] + fields[1] + fields[2] + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def background_load(seconds: float = 0.5) -> Optional[float]:
    """How many CPUs' worth of work other processes do right now."""
    a = system_busy_seconds()
    time.sleep(seconds)
    b = system_busy_seconds()
    if a is None or b is None:
        return None
    return (b - a) / seconds


def wait_quiet(limit: float, progress) -> Optional[float]:
    """Wait up to *limit* s for other processes to calm down; last load seen."""
    deadline = time.monotonic() + limit
    load = background_load(0.3)
    told = False
    while load is not None and load > NOISE and time.monotonic() < deadline:
        if not told:
            progress(f"waiting for other processes to go quiet ({load * 100:.0f}% cpu) ...")
            told = True
        load = background_load(1.0)
    return load


def pick_cpus() -> Optional[tuple]:
    """Two CPUs on different cores if possible: (server, load generator)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if len(cpus) < 2:
        return None
    first = cpus[0]
    siblings = {first}
    try:
        text = Path(f"/sys/devices/system/cpu/cpu{first}/topology/thread_siblings_list").read_text()
        for part in text.strip().split(","):
            lo, _, hi = part.partition("-")
            siblings.update(range(int(lo), int(hi or lo) + 1))
    except (OSError, ValueError):
        pass
    others = [c for c in cpus if c not in siblings] or cpus[1:]
    return first, others[0]


def pin(pid: int, cpu: Optional[int]) -> None:
    if cpu is None:
        return
    try:
        os.sched_setaffinity(pid, {cpu})
    except (AttributeError, OSError):
        pass


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    except (ValueError, OSError):
        return soft


def ephemeral_ports() -> Optional[int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(hi) - int(lo) + 1
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------
# machine description


def _cpu_model() -> str:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return model or platform.processor() or "unknown"


def _package_versions() -> Dict[str, str]:
    versions = {}
    try:
        from importlib import metadata

        for dist in ("asynframe", "uvloop", "twisted", "pyasyncore", "pyasynchat", "psutil", "matplotlib"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
    except ImportError:
        pass
    return versions


def machine_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "kernel": platform.release(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
    }
    info["cpu_model"] = _cpu_model()
    try:
        info["cpu_affinity"] = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    info["packages"] = _package_versions()
    try:
        import asynframe

        info["asynframe_core"] = asynframe.CORE_IMPLEMENTATION
    except Exception:
        pass
    return info
