"""What a provider declares about itself, so the core asks it instead of looking it up by name.

A provider class carries:

* ``facts``: a :class:`ProviderFacts` (data rules, hosted or not, its model table with prices,
  context limits and dates, default request concurrency, the rows ``cloudtune providers`` prints);
* ``Options``: a :class:`ProviderOptions` model of the ``-o KEY=VALUE`` options it reads, so an
  unknown key or a bad value is refused by validation before a run is recorded;
* ``unsupported``: :class:`Operation` -> why it cannot do it.

Every field has a default, so a plugin provider that declares nothing is still usable: it is
hosted, takes one or more examples, leaves the file's byte-order mark alone, warns about special
tokens, knows no models (no context limit, no price), answers 4 requests at a time and takes no
options. The core reads these through :func:`cloudtune.registry.provider_facts`.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from cloudtune.catalog import SPECIAL_TOKENS, ModelInfo, ProviderDataRules, find_model


class Operation(str, enum.Enum):
    """The operations of the provider interface, in the order a run uses them (skypilot-style
    feature enum: a provider declares the ones it cannot do in ``unsupported``)."""

    CHECK = "check"
    UPLOAD_FILE = "upload_file"
    FIND_UPLOADED = "find_uploaded"
    GET_FILE = "get_file"
    DELETE_FILE = "delete_file"
    CREATE_JOB = "create_job"
    FIND_JOBS = "find_jobs"
    GET_JOB = "get_job"
    LIST_JOBS = "list_jobs"
    LIST_EVENTS = "list_events"
    LIST_CHECKPOINTS = "list_checkpoints"
    CANCEL_JOB = "cancel_job"
    PAUSE_JOB = "pause_job"
    RESUME_JOB = "resume_job"
    DEPLOY = "deploy"
    GET_DEPLOYMENT = "get_deployment"
    LIST_DEPLOYMENTS = "list_deployments"
    UNDEPLOY = "undeploy"
    DELETE_MODEL = "delete_model"
    MODEL_EXISTS = "model_exists"
    CHAT = "chat"

    def __str__(self) -> str:
        return self.value


#: What a provider that declares no data rules accepts: a hosted service that takes any number of
#: examples of any size, gets the file with its byte-order mark as it is, and does not refuse
#: special tokens (they are warned about) or images.
DEFAULT_DATA_RULES = ProviderDataRules(
    min_examples=1,
    max_file_bytes=None,
    max_upload_bytes=None,
    bom="accepted",
    special_tokens_are_errors=False,
    multimodal=False,
    special_tokens=SPECIAL_TOKENS,
    hosted=True,
    notes="No data rules declared by the provider: cloudtune's defaults.",
)


@dataclass(frozen=True)
class ProviderFacts:
    """The facts the core needs about a provider before (or without) calling it."""

    #: what a training file may hold (examples, sizes, byte-order mark, special tokens, images)
    data_rules: ProviderDataRules = DEFAULT_DATA_RULES
    #: the base models it fine-tunes, with context limits, prices and the dates they were read
    models: tuple[ModelInfo, ...] = ()
    #: requests ``compare`` sends at once unless told otherwise
    request_concurrency: int = 4
    #: rows of ``cloudtune providers`` (model, route, status, where, dates...); None: from ``models``
    model_rows: Callable[[], list[dict[str, Any]]] | None = field(default=None, compare=False)

    @property
    def hosted(self) -> bool:
        """Whether the service bills for training (False: your own hardware, no bill)."""
        return self.data_rules.hosted

    @property
    def bom(self) -> str:
        """``required`` | ``accepted`` | ``refused``: the byte-order mark of the uploaded copy."""
        return self.data_rules.bom

    def lookup_model(self, model: str | None) -> ModelInfo | None:
        return find_model(self.models, model)

    def rows(self, route: str) -> list[dict[str, Any]]:
        if self.model_rows is not None:
            return self.model_rows()
        return [{"model": info.name, "route": route, "status": "fine-tunable", "where": ", ".join(info.methods),
                 "dates": info.price_date or "-", "instead": None, "source": info.price_source}
                for info in self.models]


DEFAULT_FACTS = ProviderFacts()


def _scalar_as_text(value: Any) -> Any:
    if isinstance(value, (bool, int, float, datetime.date)):
        return str(value)
    return value


#: An option holding text. YAML reads ``-o api_version=2024-10-21`` as a date and ``-o project=42`` as a
#: number; both are still text to the provider. A list or a mapping is refused.
Text = Annotated[str, BeforeValidator(_scalar_as_text)]


class ProviderOptions(BaseModel):
    """Base of a provider's ``-o KEY=VALUE`` options: unknown keys are refused; a field's
    ``description`` is the one-line help printed when a key is misspelt. Values arrive as YAML
    reads them (``-o steps=3`` is a number); numbers are accepted where text is expected."""

    model_config = ConfigDict(extra="forbid")

    #: the run's base model, passed by cloudtune to every provider (never typed by the user)
    base_model: Text | None = None


__all__ = ["DEFAULT_DATA_RULES", "DEFAULT_FACTS", "Operation", "ProviderFacts", "ProviderOptions", "Text"]
