"""One data file for every provider: the byte-order mark each one wants in what it receives.

Azure documents training files as "UTF-8 with a byte-order mark (BOM)"
(MicrosoftDocs/azure-ai-docs ``articles/ai-foundry/openai/includes/fine-tuning-oai-sdk.md``,
09/01/2025); OpenAI's processing marks a file that starts with one as ``error``; the local backend
reads either. So the user keeps one file, and the run-tagged copy cloudtune uploads
(:meth:`cloudtune.uploads.Uploader.upload_copy`) is written in the encoding the provider
declares (``facts.data_rules.bom``): the BOM stripped or added there. The user's file is never modified; ``validate`` says so as a note.
"""

from __future__ import annotations

import shutil
from typing import BinaryIO

from cloudtune.catalog import provider_rules

from ._reader import UTF8_BOM


def upload_encoding(provider: str) -> str | None:
    """``utf-8-sig`` (with BOM), ``utf-8`` (without), or None (kept as it is) for ``provider``."""
    rules = provider_rules(provider)  # what the provider declares (its facts)
    if not rules.hosted:
        return None  # nothing is uploaded: the file is read as it is
    rule = rules.bom
    return {"required": "utf-8-sig", "refused": "utf-8"}.get(rule)


def copy_for_upload(source: BinaryIO, out: BinaryIO, provider: str) -> None:
    """Stream ``source`` into ``out`` with the BOM ``provider`` wants (the rest byte for byte)."""
    head = source.read(len(UTF8_BOM))
    has_bom = head == UTF8_BOM
    wanted = upload_encoding(provider)
    if wanted == "utf-8-sig" and not has_bom:
        out.write(UTF8_BOM)
    if not (has_bom and wanted == "utf-8"):
        out.write(head)
    shutil.copyfileobj(source, out, 1 << 20)


def encoding_note(provider: str, has_bom: bool) -> str | None:
    """What the upload copy changes for ``provider``, or None when it sends the file as it is."""
    wanted = upload_encoding(provider)
    if wanted == "utf-8" and has_bom:
        return (f"the file starts with a UTF-8 byte-order mark, which {provider} does not accept: cloudtune uploads "
                "a copy without it (your file is not modified)")
    if wanted == "utf-8-sig" and not has_bom:
        return (f"{provider} documents UTF-8 with a byte-order mark: cloudtune uploads a copy with one "
                "(your file is not modified)")
    return None
