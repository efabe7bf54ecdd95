"""Ctrl-C (SIGINT) held back over a block that must run whole: a training step's parameter update and the
iteration counter that records it.

A ``KeyboardInterrupt`` raised between ``optimizer.step()`` and ``it += 1`` (or inside the step, between two
parameters) would leave a checkpoint saved on interrupt whose weights are one step ahead of its iteration, and
``--restore`` would apply that step twice. The trainers (:mod:`fgsn.train`, :mod:`fgsn.pretrain`,
:mod:`localization.apr.train`) run the update under :func:`deferred_interrupt`.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold SIGINT until the block ends, then deliver it to the handler that was in place (Python's default
    raises ``KeyboardInterrupt`` there). Outside the main thread (where no handler can be installed) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)
