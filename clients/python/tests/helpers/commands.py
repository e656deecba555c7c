"""What the worker processes of the multi-process tests share: the start protocol (each
prints ``ready`` and waits for ``go``, so that all start together) and running commands
while counting them and the errors they raise (the tests count them, so none is raised)."""

from __future__ import annotations

import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


def wait_for_go() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


class Commands:
    """Calls ``target``'s commands by name: the result, or None after an error, which is
    recorded (the first two with their traceback on stderr) and followed by
    ``after_error``."""

    def __init__(
        self,
        target: Any,
        *,
        after_error: Callable[[], None] | None = None,
        message_length: int = 200,
    ) -> None:
        self.target = target
        self.after_error = after_error
        self.message_length = message_length
        self.count = 0
        self.errors: list[str] = []
        self.succeeded: list[str] = []
        self.seconds: list[float] = []  # each call's wall time, failed ones included

    def __call__(self, name: str, *args: Any) -> Any:
        self.count += 1
        started = time.perf_counter()
        try:
            result = getattr(self.target, name)(*args)
        except Exception as error:  # noqa: BLE001 - the tests count them
            self.seconds.append(time.perf_counter() - started)
            message = (str(error).splitlines() or [""])[0][: self.message_length]
            self.errors.append(f"{name}: {type(error).__name__}: {message}")
            if len(self.errors) <= 2:
                traceback.print_exc(file=sys.stderr)
            if self.after_error is not None:
                self.after_error()
            return None
        self.seconds.append(time.perf_counter() - started)
        self.succeeded.append(name)
        return result
