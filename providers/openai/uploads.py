"""Getting a training file to OpenAI: Files API for small files, Uploads API above a threshold.

The Uploads API takes parts of at most 64 MB, sent here in parallel, and is
completed with the part ids in file order and the file's md5 so the service can
check the bytes. A part is safe to send again (only the ids passed to
``complete`` count), so parts are retried; the whole upload is cancelled if it
cannot be completed.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from cloudtune import errors
from providers.openai.capabilities import UPLOADS_API_MAX_BYTES

T = TypeVar("T")
Retried = Callable[[Callable[[], T]], T]
Progress = Callable[[int, int], None] | None


class _Counter:
    def __init__(self, total: int, progress: Progress) -> None:
        self.total = total
        self.sent = 0
        self.progress = progress
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self.sent += count
            if self.progress is not None:
                self.progress(self.sent, self.total)


def upload_small(client: Any, path: Path, purpose: str, retried: Retried, progress: Progress) -> str:
    size = path.stat().st_size

    def send() -> Any:
        with path.open("rb") as handle:  # reopened on every attempt
            return client.files.create(file=(path.name, handle), purpose=purpose)

    # Not retried here: a POST that failed after the service stored the file would leave an
    # orphan per retry. The pipeline looks for the run-tagged file name first, then decides.
    created = send()
    if progress is not None:
        progress(size, size)
    return created.id


def _read_part(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def upload_multipart(
    client: Any,
    path: Path,
    purpose: str,
    retried: Retried,
    progress: Progress,
    *,
    part_bytes: int,
    workers: int,
) -> str:
    size = path.stat().st_size
    if size > UPLOADS_API_MAX_BYTES:
        raise errors.DatasetError(
            f"{path} is {size / 2**30:.1f} GB; OpenAI accepts at most 8 GB per file.",
            hint="Split the data set or sample it down.", provider="openai",
        )
    md5 = hashlib.md5()  # noqa: S324 - the checksum the Uploads API asks for
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            md5.update(block)
    upload = retried(lambda: client.uploads.create(
        bytes=size, filename=path.name, mime_type="text/jsonl", purpose=purpose))
    counter = _Counter(size, progress)
    offsets = list(range(0, size, part_bytes)) or [0]

    def send(offset: int) -> str:
        data = _read_part(path, offset, part_bytes)
        part = retried(lambda: client.uploads.parts.create(upload.id, data=data))
        counter.add(len(data))
        return part.id

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="openai-upload") as pool:
            part_ids = list(pool.map(send, offsets))  # map keeps file order
        # complete creates the file: not retried blindly (see upload_small); parts are safe to retry,
        # since only the part ids named here become the file
        done = client.uploads.complete(upload.id, part_ids=part_ids, md5=md5.hexdigest())
    except BaseException:
        try:
            client.uploads.cancel(upload.id)
        except Exception:  # noqa: BLE001 - best effort; the upload expires after an hour anyway
            pass
        raise
    if done.file is None:
        raise errors.ProviderError(f"OpenAI completed upload {upload.id} without a file.", provider="openai")
    return done.file.id


def fail_if_errored(client: Any, file_id: str, retried: Retried) -> None:
    """One look at the file, no waiting: OpenAI accepts a job on a file that is still being
    processed, and the file object's ``status`` is deprecated in the spec
    (``shared/specs/openai-openapi.yaml``, OpenAIFile, read 2026-11-25). Only a file already marked
    ``error`` stops here; anything later surfaces as the job's own failure."""
    found = retried(lambda: client.files.retrieve(file_id))
    if getattr(found, "status", None) == "error":
        detail = getattr(found, "status_details", None) or "no detail given"
        raise errors.DatasetError(f"OpenAI could not process file {file_id}: {detail}", provider="openai")
