"""Stopping the programs the tests start: politely first, then for sure."""

from __future__ import annotations

import subprocess

STOP_SECONDS = 15.0


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = STOP_SECONDS) -> None:
    """SIGTERM, then SIGKILL when the process outlives `timeout`; reaped either way, and a process that
    already exited is only reaped."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
