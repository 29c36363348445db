"""How often `buildhub-emit run` sends heartbeats: the interval it waits, not the clock."""

import importlib.util
import sys
import threading
import types

import pytest

import buildevents.emitter

HEARTBEAT_THREAD = "buildhub-heartbeat"


def fresh_emitter(monkeypatch, interval: str | None):
    """The emitter file as a build host imports it, with BUILDHUB_HEARTBEAT_SECONDS as given."""
    if interval is None:
        monkeypatch.delenv("BUILDHUB_HEARTBEAT_SECONDS", raising=False)
    else:
        monkeypatch.setenv("BUILDHUB_HEARTBEAT_SECONDS", interval)
    spec = importlib.util.spec_from_file_location("emitter_copy", buildevents.emitter.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RecordingSender:
    """Stands in for the emitter's HTTP sender: keeps what the run would have posted."""

    def __init__(self):
        self.events = []

    def send(self, event):
        self.events.append(event)

    def close(self):
        pass


@pytest.mark.parametrize(("interval", "expected"), [(None, 25.0), ("7", 7.0)])
def test_run_waits_25_seconds_between_heartbeats_by_default(monkeypatch, interval, expected):
    emitter = fresh_emitter(monkeypatch, interval)
    waits = []

    class HeartbeatClock(threading.Event):
        """The heartbeat thread's waits are recorded; the first one ends at once, as if the
        interval had passed, so one heartbeat goes out while the command runs."""

        def wait(self, timeout=None):
            if threading.current_thread().name == HEARTBEAT_THREAD:
                waits.append(timeout)
                if len(waits) == 1:
                    return False
            return super().wait(timeout)

    monkeypatch.setattr(
        emitter, "threading", types.SimpleNamespace(Event=HeartbeatClock, Thread=threading.Thread)
    )
    monkeypatch.setattr(emitter, "git_details", dict)
    sender = RecordingSender()
    monkeypatch.setattr(emitter, "Sender", lambda url, token: sender)

    assert emitter.main(["run", "--", sys.executable, "-c", "pass"]) == 0
    for thread in threading.enumerate():
        if thread.name == HEARTBEAT_THREAD:
            thread.join(timeout=10)

    assert waits == [expected, expected]  # the second wait ends when the command does
    kinds = [event["event"] for event in sender.events]
    assert kinds.count("heartbeat") == 1
    assert "build_completed" in kinds
    run_ids = {event["runId"] for event in sender.events}
    assert len(run_ids) == 1
