"""Keeping secrets out of output, logs and the ledger: the one redaction module.

``redact`` cleans structured documents by key name and value shape; ``scrub`` cleans free text (error
messages from services quote keys, URLs and headers). Both apply two rules together:

1. **the environment**: the value of every environment variable whose name says KEY, TOKEN, SECRET,
   PASSWORD, CONNECTION_STRING or SAS, whatever its prefix (``HUGGING_FACE_HUB_TOKEN``,
   ``AZURE_OPENAI_AD_TOKEN``, ``OPENAI_ADMIN_KEY``...). Names that point at a secret (``..._FILE``,
   ``..._PATH``, ``..._ENV``) and values too short or too plain to be a credential (``1``, ``true``,
   ``disabled``) are left alone, or every message would be masked;
2. **credential shapes**, masked wherever they appear:

   * API keys ``sk-...`` (``sk-proj-...``, ``sk-svcacct-...`` included);
   * ``Authorization`` values: ``Bearer <token>``, ``Basic <base64 of user:password>``, and JWTs (``eyJ...``);
   * credentials in a URL: ``https://user:pass@host`` -> ``https://***@host``;
   * ``api-key`` / ``x-api-key`` / ``api_key`` as a header (``api-key: ...``), a query parameter
     (``?api-key=...``) or a JSON field (Azure OpenAI's key header, learn.microsoft.com "Azure OpenAI
     REST API reference", read 2026-12-04); ``code=`` in a query string (Azure Functions keys);
   * Azure storage connection strings: ``AccountKey=...`` and ``SharedAccessSignature=...``
     (learn.microsoft.com, "Configure Azure Storage connection strings", read 2026-12-04), and the value
     of ``sig=`` in a SAS query string ("Create a service SAS", read 2026-11-25);
   * Hugging Face tokens ``hf_...`` (huggingface.co/docs/hub/security-tokens, read 2026-12-04);
   * AWS access key ids ``AKIA...`` / ``ASIA...`` (docs.aws.amazon.com IAM "Unique identifiers", read 2026-12-04);
   * GitHub tokens: ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` + 36 characters and fine-grained
     ``github_pat_...`` (github.blog, "Behind GitHub's new authentication token formats", 2021-04-05).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

REDACTED = "***"
# Credential variables read by name elsewhere (kept for callers; the rule below covers far more).
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
_SECRET_ENV_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CONNECTION_STRING|SAS", re.I)
_POINTER_ENV_NAME = re.compile(r"(_ENV|_VAR|_FILE|_PATH|_DIR|_ID)$", re.I)
# shorter values would mask ordinary words and numbers everywhere; a plain lower-case word is a
# setting ("disabled", "keyring"), not a credential
_MIN_SECRET_LEN = 8
_PLAIN_WORD = re.compile(r"[a-z]{1,15}|true|false|none|null|[0-9]{1,7}", re.I)

_SECRET_KEY = re.compile(
    r"(secret|password|passwd|authorization|connection_?string|api[-_]?key|primary_?key|secondary_?key"
    r"|account_?key|^key$|_key$|(^|_)token$|^keys$|^sig$|^sas$|_sas$|sas_token)",
    re.I,
)
# Names that *point at* a secret, or choose how to get one, are safe to keep (and needed by
# `resume`): ``api_key_env: MY_KEY``, ``credential: cli``.
_POINTER_KEY = re.compile(r"(_env|_var|_file|_path)$|^credential$", re.I)

_TOKEN_SHAPES = (
    r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-*]{6,}",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bhf_[A-Za-z0-9]{20,}",
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
    r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-.]+",
)
_SECRET_VALUE = re.compile(r"^(" + "|".join(_TOKEN_SHAPES) + r"|Bearer\s+\S+)")
_SECRET_IN_TEXT = re.compile("|".join(_TOKEN_SHAPES))
# "name=value" / "name: value" pairs whose value is a credential; the name is kept so a message still
# says what was sent. A value ends at the separators of query strings, headers and connection strings.
_VALUE_END = r"[^\s\"'&;,<>]"
_NAMED_VALUE = re.compile(
    r"(?i)(\b(?:AccountKey|SharedAccessKey|SharedAccessSignature)=)" + r"[^\s\"';<>]+"
    r"|((?:[?&;]|\b)sig(?:=|%3D))" + _VALUE_END + r"+"
    r"|((?:[?&]|%26|%3F)code(?:=|%3D))" + _VALUE_END + r"+"
    r"|((?<![A-Za-z0-9])(?:x-)?api[-_]?key[\"']?\s*(?:[:=]|%3D)\s*[\"']?)(?!\*\*\*)" + _VALUE_END + r"{6,}"
)
# An Authorization value, whatever its scheme ("Authorization: Basic dXNlcjpwYXNz", "authorization=Digest ...");
# the scheme is kept so a message still says what was sent.
_AUTH_HEADER = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?[A-Za-z\-]+\s+)[^\s\"',;]+")
# "Bearer <token>" anywhere; "Basic <base64 of user:password>" anywhere (decoded to tell it from English)
_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=\-]{6,}", re.I)
_BASIC = re.compile(r"\b(Basic)\s+([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])", re.I)
# scheme://user:password@host, scheme://token@host (the authority ends at / ? # or space)
_URL_USERINFO = re.compile(r"(?<=://)[^/?#\s@\"'<>]+@")


def secret_env_values(environ: Any = None) -> list[str]:
    """The values of the environment's credential variables, longest first (so a key that contains
    another is masked whole)."""
    found = set()
    for name, value in (os.environ if environ is None else environ).items():
        if not value or not _SECRET_ENV_NAME.search(name) or _POINTER_ENV_NAME.search(name):
            continue
        value = value.strip()
        if len(value) >= _MIN_SECRET_LEN and not _PLAIN_WORD.fullmatch(value):
            found.add(value)
    return sorted(found, key=len, reverse=True)


# scrub() runs for every string of every ledger save and message (~270 calls per command): the
# environment's secret forms are worked out once per distinct environment, not on each call. The key is
# the whole environment, so a variable set or changed later (a test, a credential helper) counts at once.
_env_forms: tuple[tuple[tuple[Any, Any], ...], tuple[str, ...]] = ((), ())


def _secret_env_forms() -> tuple[str, ...]:
    """Each secret value of ``os.environ`` as given and as it reads inside a JSON string (quotes and
    backslashes escaped), longest value first."""
    global _env_forms
    # os.environ's encoded dict, read without decoding each entry (a plain mapping where there is none)
    snapshot = tuple(getattr(os.environ, "_data", os.environ).items())
    cached_snapshot, forms = _env_forms
    if snapshot != cached_snapshot or not snapshot:
        forms = tuple(dict.fromkeys(form for value in secret_env_values()
                                    for form in (value, json.dumps(value)[1:-1])))
        _env_forms = (snapshot, forms)
    return forms


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
    for form in _secret_env_forms():
        if form in text:
            text = text.replace(form, REDACTED)
    text = _URL_USERINFO.sub(REDACTED + "@", text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _BASIC.sub(_mask_basic, text)
    text = _NAMED_VALUE.sub(lambda m: next(g for g in m.groups() if g is not None) + REDACTED, text)
    return _SECRET_IN_TEXT.sub(REDACTED, text)
