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
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


@dataclass(frozen=True)
class ModelInfo:
    provider: str
    name: str
    aliases: tuple[str, ...] = ()
    # Longest single training example the provider accepts, in tokens.
    context_tokens: int | None = None
    # tiktoken encoding name; None means a Hugging Face tokenizer or unknown,
    # in which case token counts are estimates unless a local tokenizer is given.
    tokenizer: str | None = None
    methods: tuple[str, ...] = ("supervised",)
    price_per_1m_training_tokens: float | None = None  # USD
    price_date: str | None = None
    price_source: str | None = None
    notes: str = ""
    context_source: str | None = None
    # USD per 1M tokens for chatting with it: ((input, output) of the base model, (input, output) of a
    # fine-tune of it); None: unpriced (e.g. your own hardware). ``cloudtune compare`` reads it.
    inference_prices: tuple[tuple[float, float], tuple[float, float]] | None = None
    inference_price_date: str | None = None
    inference_price_source: str | None = None

    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class ProviderDataRules:
    min_examples: int
    max_file_bytes: int | None  # one ordinary file upload
    max_upload_bytes: int | None  # the largest file any upload route accepts (e.g. OpenAI Uploads API)
    # "required" | "accepted" | "refused": the upload copy gets (or loses) the BOM accordingly, so one
    # file works for every provider (cloudtune/dataset/_encoding.py); the user's file is never changed
    bom: str
    special_tokens_are_errors: bool
    multimodal: bool
    special_tokens: tuple[str, ...] = ()
    hosted: bool = True
    notes: str = ""


# Strings that tokenizers of the hosted and common open models treat as control
# tokens. Inside training content they either get refused by the provider
# ("contains special tokens") or silently change what the model learns.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|endofprompt|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|im_sep|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)


# A fine-tuned model id ("ft:gpt-4o-mini-2024-07-18:org::abc") or an Azure
# deployment-style name with a version ("gpt-4o-mini-2024-07-18.ft-abc") should
# resolve to its base model.
_FT_PREFIX = re.compile(r"^ft:")


def _normalise(name: str) -> str:
    name = _FT_PREFIX.sub("", name.strip())
    name = name.split(":", 1)[0]
    return name.lower()


def find_model(candidates: tuple[ModelInfo, ...], model: str | None) -> ModelInfo | None:
    """Find ``model`` among ``candidates``: exact name or alias first, then the
    longest known name that is a prefix of it (snapshots and fine-tune ids:
    ``gpt-4o-mini-2024-07-18``, ``gpt-4o-mini-2024-07-18.ft-x``,
    ``ft:gpt-4o-mini-2024-07-18:org::id``). Local models also match on the
    last path component (``/models/SmolLM2-135M-Instruct``)."""
    if not model:
        return None
    wanted = _normalise(model)
    wanted_tail = wanted.rstrip("/").rsplit("/", 1)[-1]
    for info in candidates:
        for name in info.names():
            low = name.lower()
            if wanted == low or wanted_tail == low.rsplit("/", 1)[-1]:
                return info
    best: tuple[int, ModelInfo] | None = None
    for info in candidates:
        for name in info.names():
            low = name.lower()
            for probe in (wanted, wanted_tail):
                if probe.startswith(low) and (len(probe) == len(low) or probe[len(low)] in "-._@"):
                    if best is None or len(low) > best[0]:
                        best = (len(low), info)
    return best[1] if best else None


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


__all__ = ["DEFAULT_DATA_RULES", "DEFAULT_FACTS", "SPECIAL_TOKENS", "ModelInfo", "Operation", "ProviderDataRules",
           "ProviderFacts", "ProviderOptions", "Text", "find_model"]
