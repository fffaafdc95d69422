"""Waiting for a ``demo.py`` launched in another process to serve its page, and stopping it.

Used by benchmarks, tests and scripts.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request


class ServerNotUp(RuntimeError):
    """The demo process exited, or did not answer at its URL in time."""


def wait_for_server(url: str, process: subprocess.Popen, timeout: float, poll_s: float = 0.05) -> None:
    """Poll ``url`` until it answers 200; raise :class:`ServerNotUp` if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerNotUp(f"demo.py exited with {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet
        time.sleep(poll_s)
    raise ServerNotUp(f"demo.py did not serve {url} within {timeout} s")


def stop_server(process: subprocess.Popen, grace_s: float = 20.0) -> int:
    """Ask ``process`` to exit (SIGTERM), kill it if it has not within ``grace_s``; return its exit code."""
    process.terminate()
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
