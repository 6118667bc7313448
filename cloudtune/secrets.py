"""Keeping secrets out of output, logs and the ledger.

``redact`` cleans structured documents by key name and value shape;
``scrub`` cleans free text (error messages from SDKs quote keys) by value
shape and by the actual values of the credential variables in the environment.

Shapes masked wherever they appear:

* API keys ``sk-...`` (``sk-proj-...``, ``sk-svcacct-...`` included);
* ``Authorization`` values: ``Bearer <token>``, ``Basic <base64>``, and JWTs (``eyJ...``);
* credentials in a URL: ``https://user:pass@host`` -> ``https://***@host``;
* GitHub tokens: ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` + 36 characters and fine-grained
  ``github_pat_...`` (github.blog, "Behind GitHub's new authentication token formats", 2021-04-05);
* Azure SAS signatures: the value of ``sig=`` in a query string (learn.microsoft.com, "Create a
  service SAS", read 2026-11-25).
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
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "CLOUDTUNE_LOCAL_KEY",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "HF_TOKEN",
)
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|authorization|connection_?string|api_?key|primary_?key|secondary_?key"
    r"|^key$|_key$|(^|_)token$|^keys$|^sig$|^sas$|_sas$|sas_token)",
    re.I,
)
# Names that *point at* a secret, or choose how to get one, are safe to keep (and needed by
# `resume`): ``api_key_env: MY_KEY``, ``credential: cli``.
_POINTER_KEY = re.compile(r"(_env|_var|_file|_path)$|^credential$", re.I)

_TOKEN_SHAPES = (
    r"sk-[A-Za-z0-9_\-*]{6,}",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-.]+",
)
_SECRET_VALUE = re.compile(r"^(" + "|".join(_TOKEN_SHAPES) + r"|Bearer\s+\S+)")
_SECRET_IN_TEXT = re.compile("|".join(_TOKEN_SHAPES) + r"|(?<=[?&]sig=)[^&\s\"'<>]+|(?<=[?&]sig%3D)[^&\s\"'<>]+")
# An Authorization value, whatever its scheme ("Authorization: Basic dXNlcjpwYXNz", "authorization=Digest ...");
# the scheme is kept so a message still says what was sent.
_AUTH_HEADER = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?[A-Za-z\-]+\s+)[^\s\"',;]+")
# "Bearer <token>" anywhere; "Basic <base64 of user:password>" anywhere (decoded to tell it from English)
_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=\-]{6,}", re.I)
_BASIC = re.compile(r"\b(Basic)\s+([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])", re.I)
# scheme://user:password@host, scheme://token@host (the authority ends at / ? # or space)
_URL_USERINFO = re.compile(r"(?<=://)[^/?#\s@\"'<>]+@")


def _mask_basic(match: re.Match[str]) -> str:
    import base64
    import binascii

    try:
        decoded = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    return f"{match.group(1)} {REDACTED}" if b":" in decoded else match.group(0)


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
    text = _URL_USERINFO.sub(REDACTED + "@", text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _BASIC.sub(_mask_basic, text)
    return _SECRET_IN_TEXT.sub(REDACTED, text)
