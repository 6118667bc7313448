"""A SIGTERM whose exception is eaten on its way up - by a finalizer (Python prints "Exception
ignored" and carries on) or by a library that reports it as its own error - still interrupts the
command: exit 130 and ``errors.Interrupted``, never a lost signal or a "failed" run."""

from __future__ import annotations

import signal
import weakref
from typing import Any

import pytest

from cloudtune import errors, interrupts, timescale
from cloudtune.command_helpers import Signalled, interruptible
from tests.support.memory_provider import MemoryProvider

# the swallowed exceptions are the point: pytest reports each one a finalizer ate as a warning
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class _Thing:
    pass


def _signal_inside_a_weakref_callback(sig: int = signal.SIGTERM) -> list[str]:
    """Deliver ``sig`` while a weakref callback runs (the handler raises there, where nothing can
    propagate); returns what the callback reached after the signal."""
    reached: list[str] = []

    def callback(_ref: object) -> None:
        signal.raise_signal(sig)  # the handler runs here, inside the callback
        reached.append("after the signal")

    thing = _Thing()
    ref = weakref.ref(thing, callback)
    del thing  # the callback runs now; its exception is "ignored"
    assert ref() is None
    return reached


def test_a_signal_swallowed_by_a_finalizer_interrupts_the_next_wait() -> None:
    steps: list[str] = []
    with pytest.raises(errors.Interrupted, match="SIGTERM"):
        with interruptible():
            reached = _signal_inside_a_weakref_callback()
            steps.append("went on after the lost signal")  # as Python does: the exception was swallowed
            timescale.sleep(0.0)
            steps.append("waited")  # never: the wait raises the lost interruption
    assert reached == []  # the handler did raise inside the callback
    assert steps == ["went on after the lost signal"]
    assert interrupts.pending() is None


def test_a_signal_swallowed_by_a_finalizer_interrupts_at_the_end_of_the_block() -> None:
    with pytest.raises(errors.Interrupted, match="SIGINT"):
        with interruptible():
            _signal_inside_a_weakref_callback(signal.SIGINT)
            # no wait before the block ends: the end of the guarded block raises it


def test_an_interruption_on_its_way_up_lets_its_recording_and_cleanup_wait() -> None:
    waited: list[str] = []
    with pytest.raises(errors.Interrupted):
        with interruptible():
            try:
                signal.raise_signal(signal.SIGTERM)
            except Signalled:
                timescale.sleep(0.0)  # what the run does on its way out (records it, cleans up)
                waited.append("recorded")
                raise
    assert waited == ["recorded"]


class _SchemaBuildingProvider(MemoryProvider):
    """A provider whose SDK calls back into Python and reports any failure as its own error, as
    pydantic-core does while it builds a model's serializer."""

    def get_job(self, job_id: str) -> Any:
        try:
            signal.raise_signal(signal.SIGTERM)  # lands inside the library's callback
        except BaseException as exc:  # noqa: BLE001 - what the extension does
            raise RuntimeError(f"SchemaError: Error building `default` serializer: {exc}") from None
        raise AssertionError("the signal handler did not raise")


def test_a_signal_a_library_turned_into_its_own_error_is_an_interruption() -> None:
    provider = _SchemaBuildingProvider()
    with pytest.raises(errors.Interrupted, match="SIGTERM") as caught:
        with interruptible():
            provider.get_job("ftjob-1")
    signalled = caught.value.__context__
    assert isinstance(signalled, Signalled) and "SchemaError" in repr(signalled.__cause__)  # what it had become
    assert interrupts.pending() is None


def test_an_error_after_a_signal_that_never_surfaced_is_the_interruption() -> None:
    """Outside a provider call (no translation point), the guard itself says what happened."""
    with pytest.raises(errors.Interrupted, match="SIGINT"):
        with interruptible():
            _signal_inside_a_weakref_callback(signal.SIGINT)
            raise errors.InvalidInput("something that failed after the signal")


def test_without_a_signal_errors_and_waits_are_untouched() -> None:
    with pytest.raises(errors.InvalidInput):
        with interruptible():
            timescale.sleep(0.0)
            raise errors.InvalidInput("an ordinary error")
    interrupts.raise_if_lost()  # nothing pending: returns
    assert interrupts.pending() is None
