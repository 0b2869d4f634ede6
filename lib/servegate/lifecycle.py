"""Start in `__enter__`, clean up before re-raising when the start fails, stop in `__exit__`: written once.

Every owner of something that must not outlive a run (the vLLM deployment, Ray, the Stack with its
simulation and containers) is a Managed: `start()` may fail half-way, `stop()` must cope with whatever
was started, and `with` guarantees both on success, failure, Ctrl-C and SIGTERM (raised as KeyboardInterrupt).
"""

from __future__ import annotations

from typing import Any


class Managed:
    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
