"""Child-process handling shared by the long-running management commands."""

import signal
import subprocess
import time
from collections.abc import Iterable


class StopFlag:
    """Set by SIGTERM or SIGINT so a supervising loop can shut down in order."""

    def __init__(self):
        self.stopping = False
        self.signal_name = ""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        self.stopping = True
        self.signal_name = signal.Signals(signum).name


def terminate_all(processes: Iterable[subprocess.Popen], grace: float = 30.0) -> None:
    """SIGTERM every live process, wait up to ``grace`` seconds in all, then SIGKILL."""
    alive = [process for process in processes if process.poll() is None]
    for process in alive:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in alive:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
