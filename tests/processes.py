"""Child processes that the tests start (the operator, kube-apiserver and etcd, the dashboard),
stopped as the kubelet or a terminal stops them.

``stop_process(process, timeout)`` sends SIGTERM, waits up to ``timeout`` seconds, then sends
SIGKILL and waits again; it returns the exit code (at once when the process has already exited).
"""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any], timeout: float) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    return process.returncode
