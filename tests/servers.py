"""What the fixtures that start a server in a subprocess share (tests/ is on sys.path under pytest).

    proc = subprocess.Popen([...], stdout=log, stderr=subprocess.STDOUT)
    try:
        ...                     # wait until it answers, yield its URL
    finally:
        stop_process(proc, log)
"""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen, log=None, timeout: float = 30) -> None:
    """Ask ``proc`` to end, kill it if it has not within ``timeout`` seconds, then close its ``log``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if log is not None:
        log.close()
