"""Keeping secrets out of output, logs and the ledger.

``redact`` cleans structured documents by key name and value shape;
``scrub`` cleans free text (error messages from SDKs quote keys) by value
shape and by the actual values of the credential variables in the environment.
"""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "***"
SECRET_ENV_VARS = (
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_CLIENT_SECRET",
    "AZURE_API_KEY",
    "CLOUDTUNE_LOCAL_KEY",
)
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|authorization|connection_?string|api_?key|primary_?key|secondary_?key"
    r"|^key$|_key$|(^|_)token$|^keys$)",
    re.I,
)
# Names that *point at* a secret, or choose how to get one, are safe to keep (and needed by
# `resume`): ``api_key_env: MY_KEY``, ``credential: cli``.
_POINTER_KEY = re.compile(r"(_env|_var|_file|_path)$|^credential$", re.I)
_SECRET_VALUE = re.compile(r"^(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+\S+|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]+)")
_SECRET_IN_TEXT = re.compile(
    r"(sk-[A-Za-z0-9_\-*]{6,}|Bearer\s+[A-Za-z0-9._\-~+/=]{6,}|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-.]+"
    r"|(?<=[?&]sig=)[^&\s\"']+)"
)


def redact(value: Any) -> Any:
    """A copy of ``value`` with anything that looks like a secret replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if _is_secret_key(k) and v not in (None, "") else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return REDACTED if _SECRET_VALUE.match(value) else scrub(value)
    return value


def _is_secret_key(key: object) -> bool:
    name = str(key)
    return bool(_SECRET_KEY.search(name)) and not _POINTER_KEY.search(name)


def scrub(text: str) -> str:
    """``text`` with secret-shaped substrings and the environment's secret values masked."""
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 6 and value in text:
            text = text.replace(value, REDACTED)
    return _SECRET_IN_TEXT.sub(REDACTED, text)
