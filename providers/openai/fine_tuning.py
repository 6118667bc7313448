"""What the fine-tuning API asks of every client of the ``openai`` SDK family: OpenAI itself
(:mod:`providers.openai.provider`) and Azure OpenAI (:mod:`providers.azure._openai_route`), whose
``AzureOpenAI`` client speaks the same jobs and events API. Each caller keeps its own retry and
error translation; only the API's shape lives here."""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from cloudtune import listing
from cloudtune.provider import search_since
from cloudtune.types import FineTuneSpec

EVENTS_PAGE = 100
JOBS_PAGE = 100
MAX_JOB_PAGES = 20  # a hard bound even when every job is newer than the run (or has_more never ends)
MAX_EVENT_PAGES = 20  # 2,000 events back from the newest: more than a job writes between two polls
MAX_CHECKPOINTS = 1000  # the API keeps the last three; a service that lists more is read this far


def run_started_at(run_id: str) -> float | None:
    """The unix time a run began, from its id (``YYYYmmdd-HHMMSS-hex``, see cloudtune.ledger)."""
    try:
        return float(calendar.timegm(time.strptime(run_id[:15], "%Y%m%d-%H%M%S")))
    except (ValueError, TypeError):
        return None


def scan_jobs_of_run(pages: Iterable[Any], run_id: str, matches: Callable[[Any], bool]) -> list[Any]:
    """Jobs of a run, from listed pages of jobs NEWEST FIRST: stops at the first job created
    before the run began (less the clock-skew allowance, :data:`cloudtune.provider.CLOCK_SKEW_S`),
    so a user with thousands of jobs, or an
    API that keeps answering ``has_more``, costs a bounded number of requests.
    ``pages`` yields page objects with ``.data`` (the SDK's ``SyncCursorPage.iter_pages()``)."""
    started = run_started_at(run_id)
    found: list[Any] = []
    for page in listing.bounded_pages(pages, what=f"fine-tuning jobs (looking for run {run_id})",
                                      max_pages=MAX_JOB_PAGES):
        for raw in page.data:
            created = getattr(raw, "created_at", None) or 0
            if started is not None and created and created < search_since(started):
                return found
            if matches(raw):
                found.append(raw)
        if not page.data:
            break
    return found


def uploaded_file_matching(files: Any, *, filename: str, size: int, since: float) -> str | None:
    """Among listed files, the newest with this name and size created at or after ``since`` (unix
    time; the caller's :func:`cloudtune.provider.search_since` has allowed for clock skew): an
    upload whose answer never came back."""
    matches = [f for f in files if getattr(f, "filename", None) == filename and getattr(f, "bytes", None) == size
               and (getattr(f, "created_at", 0) or 0) >= int(since)]  # the API answers in whole seconds
    return max(matches, key=lambda f: f.created_at).id if matches else None


def optional_job_fields(spec: FineTuneSpec, validation_file_id: str | None) -> dict[str, Any]:
    """The ``jobs.create`` arguments sent only when set (the API rejects explicit nulls for some)."""
    fields: dict[str, Any] = {}
    if validation_file_id:
        fields["validation_file"] = validation_file_id
    if spec.suffix:
        fields["suffix"] = spec.suffix
    if spec.seed is not None:
        fields["seed"] = spec.seed
    return fields


def events_after(read_page: Callable[[dict[str, Any]], Any], after: str | None, limit: int) -> list[Any]:
    """Raw events newer than the event ``after`` (all of them when None), OLDEST first, at most ``limit``.

    The API pages newest first and its ``after`` cursor walks towards OLDER events, so "what is new
    since event X" means reading from the newest page back until X turns up. ``read_page`` makes the
    ``list_events`` call with the keyword arguments it is given (``limit``; ``after`` from the second
    page on), so each caller wraps it in its own retries."""
    def pages() -> Iterator[Any]:
        cursor: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": EVENTS_PAGE}
            if cursor:
                kwargs["after"] = cursor
            page = read_page(kwargs)
            yield page
            if not page.has_more or not page.data:
                return
            cursor = page.data[-1].id

    newer: list[Any] = []
    for page in listing.bounded_pages(pages(), what="job events", max_pages=MAX_EVENT_PAGES):
        ids = [raw.id for raw in page.data]
        if after is not None and after in ids:
            newer.extend(page.data[:ids.index(after)])
            break
        newer.extend(page.data)
    newer.reverse()
    return newer[:limit]
