"""Epochs, billed tokens and cost: an estimate, labelled as one.

The epoch rule is the one OpenAI documents in its fine-tuning data-prep guide
(cookbook "Data preparation and analysis for chat model fine-tuning"): aim for
3 epochs, but make the model see at least 100 and at most 25,000 examples in
total, with the epoch count clamped to 1..25. Billed tokens are each
example's tokens capped at the training context, times the epochs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def auto_epochs(n_examples: int) -> int:
    """OpenAI's documented default epoch count for ``n_examples`` training examples."""
    if n_examples <= 0:
        return TARGET_EPOCHS
    epochs = TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    elif n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return max(MIN_DEFAULT_EPOCHS, min(MAX_DEFAULT_EPOCHS, epochs))


@dataclass(frozen=True)
class Estimate:
    examples: int
    epochs: int
    epochs_source: str  # "auto (OpenAI data-prep rule)" | "given"
    context_tokens: int | None
    billed_tokens_per_epoch: int
    billed_tokens: int
    tokens_exact: bool
    tokenizer: str
    price_per_1m_training_tokens: float | None
    price_date: str | None
    price_source: str | None
    cost_usd: float | None
    label: str = "ESTIMATE"

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        tokens = f"{self.billed_tokens:,} billed training tokens ({self.billed_tokens_per_epoch:,} x {self.epochs} epochs"
        tokens += f", {self.epochs_source})"
        if not self.tokens_exact:
            tokens += " [token counts estimated]"
        if self.cost_usd is None:
            return f"{self.label}: {tokens}; no price known for this model (pass prices to get a cost)"
        return (
            f"{self.label}: {tokens} ~= ${self.cost_usd:,.2f} at ${self.price_per_1m_training_tokens:g}/1M tokens "
            f"(price as of {self.price_date}, {self.price_source})"
        )


def build_estimate(*, examples: int, billed_tokens_per_epoch: int, context_tokens: int | None, epochs: int | None,
                   tokens_exact: bool, tokenizer: str, price: tuple[float | None, str | None, str | None]) -> Estimate:
    chosen = epochs if epochs is not None else auto_epochs(examples)
    billed = billed_tokens_per_epoch * chosen
    per_million, date, source = price
    cost = None if per_million is None else round(billed / 1_000_000 * per_million, 4)
    return Estimate(
        examples=examples,
        epochs=chosen,
        epochs_source="given" if epochs is not None else "auto (OpenAI data-prep rule)",
        context_tokens=context_tokens,
        billed_tokens_per_epoch=billed_tokens_per_epoch,
        billed_tokens=billed,
        tokens_exact=tokens_exact,
        tokenizer=tokenizer,
        price_per_1m_training_tokens=per_million,
        price_date=date,
        price_source=source,
        cost_usd=cost,
    )
