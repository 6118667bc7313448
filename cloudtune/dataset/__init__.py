"""Dataset checks before any upload: validate, count tokens, estimate cost, split.

    from cloudtune.dataset import validate_file, split_file
    report = validate_file("train.jsonl", provider="openai", model="gpt-4o-mini-2024-07-18")
    if not report.ok:
        print(report.render())

Streaming (memory does not grow with the size of the examples), never raises
on file content, and every problem points at a line and a JSON path.
"""

from __future__ import annotations

from ._encoding import copy_for_upload, upload_encoding
from ._estimate import Estimate, auto_epochs
from ._problems import CODES, ERROR, NOTE, WARNING, Problem
from ._split import split_file
from ._tiktoken_offline import get_encoding as get_tiktoken_encoding
from ._validate import ValidationReport, validate_file

__all__ = [
    "CODES",
    "ERROR",
    "NOTE",
    "WARNING",
    "Estimate",
    "Problem",
    "ValidationReport",
    "auto_epochs",
    "copy_for_upload",
    "get_tiktoken_encoding",
    "split_file",
    "upload_encoding",
    "validate_file",
]
