"""Run the musicrnn command line with one fault injected (used by tests/test_faults.py).

    python tests/fault_child.py ARGS...     # as `musicrnn ARGS...`, with MUSICRNN_TEST_FAULT set:

- ``ckpt-write:N:BYTES``: the N-th checkpoint write (1-based) SIGKILLs this process after BYTES
  bytes reached its temporary file: a kill in the middle of writing last.pt or best.pt.
- ``prepare-swap``: SIGKILL at the moment the finished data folder would be renamed into place
  (after an existing output, if any, was moved aside): the narrowest window of ``data prepare``.

The hooks are installed here, from outside; the library has no fault-injection code of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _KillAfter:
    """A file object that passes ``limit`` bytes on, then dies (SIGKILL) mid-write."""

    def __init__(self, fh, limit: int) -> None:
        self._fh, self._left = fh, limit

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) >= self._left:
            self._fh.write(data[: self._left])
            self._fh.flush()
            os.fsync(self._fh.fileno())
            _die()
        self._left -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)


def install(fault: str) -> None:
    if fault.startswith("ckpt-write:"):
        _, nth, nbytes = fault.split(":")
        import musicrnn.checkpoint as model

        real = model.atomic_write
        count = [0]

        @contextlib.contextmanager
        def faulty(path):
            count[0] += 1
            with real(path) as fh:
                yield _KillAfter(fh, int(nbytes)) if count[0] == int(nth) else fh

        model.atomic_write = faulty
    elif fault == "prepare-swap":
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if str(src).endswith(".partial"):
                _die()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    elif fault:
        raise SystemExit(f"unknown MUSICRNN_TEST_FAULT {fault!r}")


if __name__ == "__main__":
    install(os.environ.get("MUSICRNN_TEST_FAULT", ""))
    from musicrnn.cli import main

    sys.argv = ["musicrnn", *sys.argv[1:]]
    main()
