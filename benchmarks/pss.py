"""Peak PSS of a process tree: run a command and sample its memory (shared by the benchmarks).

PSS (proportional set size) splits shared pages between the processes that share them, so the
sum over a process tree counts each page once: the driver, Dask workers, Prefect's server.
"""

from __future__ import annotations

import resource
import subprocess
import time

import psutil

GIB = 1 << 30


def tree_pss(root: psutil.Process) -> tuple[int, dict[str, int]]:
    """PSS of ``root`` and all its descendants (bytes), and per process ("pid role": bytes)."""
    per: dict[str, int] = {}
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, per
    for p in procs:
        try:
            per[f"{p.pid} {role(p)}"] = p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return sum(per.values()), per


def role(p: psutil.Process) -> str:
    """What a process of a ``segpipe run`` tree is, from its command line."""
    try:
        cmd = " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    if "uvicorn" in cmd or ("prefect" in cmd and "server" in cmd):
        return "prefect-server"
    if "multiprocessing" in cmd or "spawn_main" in cmd:
        return "dask-worker"
    if "segpipe" in cmd:
        return "segpipe"
    return p.name()


def measure(cmd: list[str], env: dict[str, str] | None = None, interval: float = 0.2,
            timeout: float | None = None) -> dict:
    """Run ``cmd``; its wall time and the peak summed PSS of its tree, sampled every ``interval``.

    ``cpu_seconds``: user + system time of the command and every descendant it waited for (the
    operating system's accounting; on a shared machine a steadier figure than wall time).
    Raises RuntimeError (with the output's tail) when the command fails.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    root = psutil.Process(proc.pid)
    peak, peak_per, samples = 0, {}, 0
    while proc.poll() is None:
        total, per = tree_pss(root)
        samples += 1
        if total > peak:
            peak, peak_per = total, per
        if timeout is not None and time.monotonic() - start > timeout:
            proc.kill()
            break
        time.sleep(interval)
    seconds = time.monotonic() - start
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} … failed ({proc.returncode}):\n{output[-4000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "peak_pss_bytes": peak,
        "peak_pss_gib": round(peak / GIB, 3),
        "per_process_at_peak": dict(sorted(peak_per.items(), key=lambda kv: -kv[1])),
        "samples": samples,
        "output_tail": output[-2000:],
    }
