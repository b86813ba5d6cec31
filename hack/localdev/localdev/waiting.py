"""The one polling loop of the harness and the tests: a deadline, and a message that says what never happened."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.2,
             failure: type[Exception] = AssertionError, explain: Callable[[], str] = lambda: "") -> T:
    """probe()'s first truthy answer. A probe gives up early by raising; on timeout, `failure` names `what`,
    the last answer and whatever `explain` adds (a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            detail = explain()
            raise failure(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"
                          + (f"\n{detail}" if detail else ""))
        time.sleep(interval)
