"""A SIGINT/SIGTERM that is never lost.

The signal handler (``command_helpers.interruptible``) raises where the main thread happens to be,
and two places can eat that exception:

* a finalizer, weakref callback or ``__del__`` the garbage collector runs: Python prints
  "Exception ignored in ..." and carries on (seen in the fault matrix: a SIGTERM during a job wait,
  lost in ``WeakValueDictionary``'s removal callback, left the run polling until it was killed);
* an extension that calls back into Python and reports any failure as its own error (seen: a
  SIGTERM while pydantic-core built an SDK model's serializer came out as ``SchemaError``, and the
  run ended "failed", exit 1, instead of interrupted, exit 130).

So the handler records what it raised (:func:`deliver`) and it stays *pending* until the command
has taken it in (:func:`consume`, where it becomes ``errors.Interrupted``). A pending interruption
is raised again at the next wait (``timescale.sleep``: not while an exception is being handled,
which is how an interruption on its way up looks) and at the provider's error translation point,
in place of whatever error it turned into.

Imports nothing but the standard library (``timescale`` imports it).
"""

from __future__ import annotations

import sys
import threading
from typing import NoReturn

_pending: BaseException | None = None


def deliver(interruption: BaseException) -> NoReturn:
    """Raise ``interruption`` (from a signal handler) and keep it pending until consumed."""
    global _pending
    _pending = interruption
    raise interruption


def consume() -> None:
    """The command has taken the interruption in (or starts afresh): nothing is pending."""
    global _pending
    _pending = None


def pending() -> BaseException | None:
    return _pending


def _on_main_thread() -> bool:
    """Signal handlers run on the main thread, so that is where an interruption belongs (a worker
    thread of ``compare`` that fails meanwhile keeps its own error)."""
    return threading.current_thread() is threading.main_thread()


def raise_if_lost() -> None:
    """At a wait: raise a pending interruption that was swallowed on its way up. Inside an ``except``
    or ``finally`` (an exception being handled: the interruption itself, or the recording and cleanup
    after it) nothing is raised."""
    global _pending
    if _pending is not None and sys.exc_info()[1] is None and _on_main_thread():
        lost, _pending = _pending, None
        raise lost.with_traceback(None)


def raise_instead_of(error: BaseException) -> None:
    """Where a foreign error is translated: if an interruption is pending, it is what happened
    (``error`` is what some library made of it); raise it, chained to ``error``."""
    global _pending
    if _pending is not None and _pending is not error and _on_main_thread():
        lost, _pending = _pending, None
        raise lost.with_traceback(None) from error
