"""The run ledger: every remote step is written down *before* it is sent (an intent) and again
after (its result: file ids, job id, deployment names, model id). A run killed at any instant -
``kill -9`` included - leaves either no intent, an intent without a result (the pipeline then
asks the provider what happened), or both. Nothing secret is written: every document passes
through :func:`redact`.

Where it is kept is a :class:`cloudtune.state.StateStore` (SQLite by default, PostgreSQL or
Azure Blob for a fleet of machines); :func:`open_ledger` opens the one this process uses.
``Ledger`` is the SQLite store, for code that wants a file at a given path.
"""

from __future__ import annotations

from cloudtune.secrets import REDACTED, redact  # noqa: F401 - re-exported
from cloudtune.state import StateStore, StepRecord, cloudtune_home, new_run_id, open_state  # noqa: F401
from cloudtune.state.sqlite import MIGRATIONS  # noqa: F401
from cloudtune.state.sqlite import SQLiteStore as Ledger  # noqa: F401

open_ledger = open_state
