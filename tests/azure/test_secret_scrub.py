"""The Azure provider's error messages go through the same redaction as everything else: a
service error quoting a storage connection string, an api-key header, tokens or a secret
variable's value is masked before it becomes a cloudtune error (the OpenAI e2e test drives the
same shapes through the CLI)."""

from __future__ import annotations

import pytest

from providers.azure._translate import scrub
from tests.openai.test_secrets_e2e import SECRET_ENV, SECRETS, SHAPES_IN_TEXT


def test_azure_errors_mask_every_credential_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    message = scrub(f"(InvalidRequest) could not use {SHAPES_IN_TEXT}")
    planted = {k: v for k, v in SECRETS.items() if v in SHAPES_IN_TEXT}
    assert planted and not [shape for shape, value in planted.items() if value in message], message
    assert "InvalidRequest" in message and "***" in message
