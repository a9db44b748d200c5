"""Paired, alternated timing of whole processes: what every benchmark here reports.

Each round runs every arm once as a fresh subprocess, in an order that rotates round by round (A B C,
B C A, C A B, ...), so that a drift in machine speed (other work starting or stopping) falls on every
arm alike. For each process it records the wall seconds (time.perf_counter around the subprocess)
and the CPU seconds (user + system of the child, from os.wait4's rusage), and its peak resident
memory (VmHWM from /proc, polled every 2 ms while it runs). A ratio between two arms is the median
over rounds of the per-round ratio (the paired median ratio), for wall time and for CPU time: on a
shared machine the CPU-time ratio moves far less than the wall-clock one, so it tells noise from a
real cost.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class Sample:
    wall: float
    cpu: float
    max_rss_mib: float
    stdout: str = ""


@dataclass
class Arm:
    label: str
    cmd: list
    samples: list = field(default_factory=list)

    def median(self, attr: str = "wall") -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)

    def row(self) -> str:
        walls = [s.wall for s in self.samples]
        return (f"{self.label:<46} {self.median('wall'):>8.3f} {min(walls):>8.3f} {max(walls):>8.3f} "
                f"{self.median('cpu'):>8.3f} {max(s.max_rss_mib for s in self.samples):>9.0f} {len(walls):>5}")


HEADER = (f"{'':<46} {'wall':>8} {'min':>8} {'max':>8} {'cpu':>8} {'peak MiB':>9} {'runs':>5}   "
          f"(seconds; wall and cpu are medians)")


def run_measured(cmd: list, env: Optional[dict] = None, cwd=None, ok_codes=(0,), timeout: float = 3600) -> Sample:
    """One fresh subprocess: wall seconds, and CPU seconds (user + system) and peak RSS from the
    child's own rusage (os.wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks = {"out": [], "err": []}

    def drain(stream, key):
        for block in iter(lambda: stream.read(1 << 16), b""):
            chunks[key].append(block)

    threads = [threading.Thread(target=drain, args=(proc.stdout, "out")),
               threading.Thread(target=drain, args=(proc.stderr, "err"))]
    for t in threads:
        t.start()
    deadline = start + timeout
    hwm = 0.0
    while True:
        hwm = max(hwm, _high_water_mib(proc.pid))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            raise subprocess.TimeoutExpired(cmd, timeout)
        time.sleep(0.002)
    wall = time.perf_counter() - start
    for t in threads:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = b"".join(chunks["out"]).decode(errors="replace")
    err = b"".join(chunks["err"]).decode(errors="replace")
    if proc.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{err[-4000:]}")
    # ru_maxrss keeps the parent's size when the child was forked from it (it survives exec): the
    # child's own high-water mark (VmHWM, polled while it runs) is used where /proc has it
    return Sample(wall, usage.ru_utime + usage.ru_stime, hwm or usage.ru_maxrss / 1024, out)


def _high_water_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def alternate(arms: list, rounds: int, env: Optional[dict] = None, cwd=None, ok_codes=(0,), warmup: int = 1,
              check: Optional[Callable[[Arm, Sample], None]] = None, timeout: float = 3600) -> list:
    """Run every arm `rounds` times, rotating the order each round, after `warmup` untimed rounds."""
    for r in range(warmup + rounds):
        k = r % len(arms)
        for arm in arms[k:] + arms[:k]:
            sample = run_measured(arm.cmd, env, cwd, ok_codes, timeout)
            if check:
                check(arm, sample)
            if r >= warmup:
                arm.samples.append(sample)
    return arms


def ratio(a: Arm, b: Arm, attr: str = "wall") -> float:
    """Median over rounds of a/b (paired: round i of a with round i of b)."""
    return statistics.median(getattr(x, attr) / getattr(y, attr) for x, y in zip(a.samples, b.samples))


def threads_note() -> str:
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM")
    set_ = ", ".join(f"{k}={os.environ[k]}" for k in keys if k in os.environ) or "none set"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return f"{cores} usable cores; thread settings: {set_}"


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
