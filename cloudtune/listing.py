"""Reading a service's lists without trusting them to end.

Every list cloudtune reads from a service (jobs, events, checkpoints, files, deployments) goes
through :func:`bounded` or :func:`bounded_pages`: at most a fixed number of items or pages, read in
the order the service lists them (newest first for every list we read), stopping early when an id
comes round again (a list that loops, as a static mock of a published API spec does: the same page
with ``has_more: true`` whatever the cursor). When a listing stops early it says so once per
process on stderr, so a result that may be partial is never presented as complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any, TypeVar

T = TypeVar("T")

MAX_ITEMS = 1000  # far more than any run makes (a handful of files, jobs, deployments, ~100 checkpoints)
MAX_PAGES = 20

_said: set[str] = set()


def item_id(item: Any) -> Any:
    """The identity a listed item carries: ``id`` (OpenAI-style objects, dicts) or ``name`` (Azure ML)."""
    if isinstance(item, dict):
        return item.get("id") or item.get("name")
    return getattr(item, "id", None) or getattr(item, "name", None)


def stopped_early(what: str, why: str) -> None:
    """Tell the user (once per process and list) that a listing was cut short."""
    key = f"{what}:{why}"
    if key in _said:
        return
    _said.add(key)
    from cloudtune.output import say

    say(f"cloudtune: note: stopped listing {what} {why}; what follows uses the newest ones only.")


def bounded(items: Iterable[T], *, what: str, max_items: int = MAX_ITEMS) -> list[T]:
    """The first ``max_items`` of ``items`` (an SDK's auto-paging iterator, newest first), each id
    once; stops at the bound or at the first repeated id, and says so."""
    seen: set[Any] = set()
    out: list[T] = []
    for item in items:
        ident = item_id(item)
        if ident is not None and ident in seen:
            stopped_early(what, "where the service started listing the same items again")
            break
        if len(out) >= max_items:
            stopped_early(what, f"after {max_items} items (the service says there are more)")
            break
        seen.add(ident)
        out.append(item)
    return out


def bounded_pages(pages: Iterable[Any], *, what: str, max_pages: int = MAX_PAGES) -> Iterator[Any]:
    """Pages (objects with ``.data``) of a listing, at most ``max_pages``; items already seen on an
    earlier page are dropped from later ones, and a page bringing nothing new ends the listing."""
    seen: set[Any] = set()
    for number, page in enumerate(pages, 1):
        fresh = [item for item in (page.data or []) if item_id(item) is None or item_id(item) not in seen]
        if page.data and not fresh:
            stopped_early(what, "where the service started listing the same items again")
            return
        seen.update(item_id(item) for item in fresh)
        yield SimpleNamespace(data=fresh, has_more=getattr(page, "has_more", None))
        if number >= max_pages and getattr(page, "has_more", True) is not False:
            stopped_early(what, f"after {max_pages} pages (the service says there are more)")
            return
