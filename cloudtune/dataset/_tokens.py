"""Token counting: the model's real tokenizer where we have it, a labelled
estimate where we do not.

* OpenAI / Azure OpenAI models: the model's tiktoken encoding (``o200k_base`` /
  ``cl100k_base``), counted by ``bpe-openai``'s Rust BPE (see ``_bpe_openai``):
  the same tables and pre-tokenizer, so the same counts, about twice as fast
  and without building token lists. tiktoken itself (loaded offline, see
  ``_tiktoken_offline``) stays as the fallback when bpe-openai cannot load,
  and as the reference the tests compare against;
  ``CLOUDTUNE_TOKEN_COUNTER=tiktoken`` selects it.
* Local models given as a directory with a Hugging Face tokenizer: that
  tokenizer and its chat template (transformers imported lazily).
* Anything else: ``o200k_base`` as a proxy, reported as an estimate; and if
  even that is unavailable, UTF-8 bytes / 4, also reported as an estimate.

Speed: an example's message framing is arithmetic, not tokenization; each
distinct string is tokenized once while it stays in a small two-generation
cache (system prompts, tool definitions and role names repeat in almost every
example); and the tokenizer's Rust core does the rest. bpe-openai's count
holds the GIL, so it runs on one thread per process (a large file is shared
out between processes instead, see ``_parallel``); tiktoken releases the GIL,
so the fallback counts a batch's new texts on threads.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from . import _bpe_openai, _tiktoken_offline
from ._rules import TOKENS_PER_MESSAGE, TOKENS_REPLY_PRIMING, Summary

_CACHE_GENERATION = 4096
_CACHE_MAX_TEXT = 64 * 1024
# Below this many characters of new text in a batch, threads cost more than they save.
_PARALLEL_MIN_CHARS = 32 * 1024


def default_threads() -> int:
    """Tokenizer threads: one per available core, up to 8; ``CLOUDTUNE_TOKEN_THREADS`` overrides."""
    override = os.environ.get("CLOUDTUNE_TOKEN_THREADS")
    if override and override.strip().isdigit():
        return max(1, int(override))
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class TokenCounter:
    """Counts tokens of example summaries. ``exact`` says whether the counts come
    from the model's own tokenizer; ``method`` says what was used."""

    def __init__(self, count_text, *, exact: bool, method: str, note: str = "", hf_tokenizer=None,
                 threads: int = 1) -> None:
        self._count_text = count_text
        self.exact = exact
        self.method = method
        self.note = note
        self._hot: dict[str, int] = {}
        self._cold: dict[str, int] = {}
        self._hf = hf_tokenizer
        self._batch: dict[str, int] = {}
        self._pool = None
        self._threads = threads if hf_tokenizer is None else 1

    @property
    def threaded(self) -> bool:
        return self._threads > 1

    def prefetch(self, texts) -> None:
        """Count the distinct texts of a batch that no cache holds yet, in
        parallel when the counter is thread-safe and the machine has spare
        cores (tiktoken releases the GIL while it encodes)."""
        if self._threads < 2:
            return
        hot, cold, batch = self._hot, self._cold, self._batch
        missing = list({t: None for t in texts if t not in hot and t not in cold and t not in batch})
        if len(missing) < 2 * self._threads or sum(map(len, missing)) < _PARALLEL_MIN_CHARS:
            return
        count = self._count_text
        size = -(-len(missing) // self._threads)
        chunks = [missing[i:i + size] for i in range(0, len(missing), size)]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="cloudtune-tokens")

        def count_chunk(chunk):
            counts = []
            for text in chunk:
                try:
                    counts.append(count(text))
                except BaseException as exc:  # noqa: BLE001 - left to count_text, which reports it per line
                    if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                        raise
                    counts.append(None)
            return counts

        for chunk, counts in zip(chunks, self._pool.map(count_chunk, chunks)):
            batch.update((text, value) for text, value in zip(chunk, counts) if value is not None)

    @contextmanager
    def single_threaded(self):
        """No tokenizer threads inside the block (processes share the cores
        out; and a forked child must never use a pool its parent started)."""
        self.close()
        threads, self._threads = self._threads, 1
        try:
            yield self
        finally:
            self._threads = threads

    def end_batch(self) -> None:
        self._batch.clear()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def count_text(self, text: str) -> int:
        if self._batch:
            value = self._batch.get(text)
            if value is not None:
                return value
        value = self._hot.get(text)
        if value is not None:
            return value
        value = self._cold.pop(text, None)
        if value is not None:
            # Seen twice: it repeats; keep it where it survives the cold flushes.
            if len(self._hot) >= _CACHE_GENERATION:
                self._hot.clear()
            self._hot[text] = value
            return value
        try:
            value = self._count_text(text)
        except UnicodeEncodeError:
            # Lone surrogates (JSON "\ud800") cannot be UTF-8 encoded; replace
            # them exactly as tiktoken's encode_ordinary does, then count.
            value = self._count_text(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
        if len(text) <= _CACHE_MAX_TEXT:
            if len(self._cold) >= _CACHE_GENERATION:
                self._cold.clear()
            self._cold[text] = value
        return value

    def count_group(self, group) -> tuple[int, int]:
        """(all tokens, trained assistant tokens) of one token sequence."""
        # Role names and repeated prompts are in the hot cache: look them up
        # inline, and call count_text only for the rest.
        texts = group.texts
        counts = list(map(self._hot.get, texts))
        if None in counts:
            count_text = self.count_text
            for index, value in enumerate(counts):
                if value is None:
                    counts[index] = count_text(texts[index])
        trained = 0
        for index in group.trained:
            trained += counts[index]
        return group.overhead + sum(counts), trained

    def count(self, summary: Summary, messages=None) -> tuple[int, int, int]:
        """(billed tokens, trained tokens, longest sequence) of one example.

        A chat example is one sequence. A preference row is the input followed by
        each output: both pairs are processed, so both count as billed tokens; the
        longest of the two pairs is what must fit the context."""
        if self._hf is not None and messages is not None and not summary.dpo:
            hf_total = self._hf_chat_tokens(messages)
            if hf_total is not None:
                _, trained = self.count_group(summary.groups[0])
                return hf_total, trained, hf_total
        if not summary.dpo:
            total, trained = self.count_group(summary.groups[0])
            return total, trained, total
        input_tokens, _ = self.count_group(summary.groups[0])
        billed, trained, longest = input_tokens, 0, input_tokens
        for group in summary.groups[1:]:
            tokens, learned = self.count_group(group)
            billed += tokens
            trained += learned
            longest = max(longest, input_tokens + tokens)
        return billed, trained, longest

    def _hf_chat_tokens(self, messages) -> int | None:
        try:
            ids = self._hf.apply_chat_template(messages, tokenize=True)
        except Exception:  # noqa: BLE001 - a template that cannot render this example: fall back to per-text counts
            return None
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)


def counter_backend() -> str:
    """``bpe-openai`` (default) or ``tiktoken`` (``CLOUDTUNE_TOKEN_COUNTER``):
    both give the same counts; tiktoken is the reference, bpe-openai the fast one."""
    value = os.environ.get("CLOUDTUNE_TOKEN_COUNTER", "").strip().lower()
    return "tiktoken" if value == "tiktoken" else "bpe-openai"


def _exact_counter(encoding_name: str):
    """(count function, method, releases the GIL) for a tiktoken encoding, or None."""
    if counter_backend() == "bpe-openai":
        tokenizer = _bpe_openai.get_tokenizer(encoding_name)
        if tokenizer is not None:
            # Its count holds the GIL: threads would only add overhead.
            return tokenizer.count, f"bpe-openai:{encoding_name}", False
    count = _tiktoken_counter(encoding_name)
    if count is not None:
        return count, f"tiktoken:{encoding_name}", True
    return None


def _tiktoken_counter(encoding_name: str):
    encoding = _tiktoken_offline.get_encoding(encoding_name)
    if encoding is None:
        return None
    encode = encoding.encode_ordinary  # special tokens in content are reported, and counted as text

    def count(text: str) -> int:
        return len(encode(text))

    return count


def _bytes_estimate(text: str) -> int:
    return (len(text.encode("utf-8", "surrogatepass")) + 3) // 4


def _hf_tokenizer_dir(model: str | None, tokenizer_path: str | Path | None) -> Path | None:
    for candidate in (tokenizer_path, model):
        if not candidate:
            continue
        path = Path(candidate).expanduser()
        try:
            if path.is_dir() and ((path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists()):
                return path
        except OSError:
            continue
    return None


def make_counter(info, *, provider: str, model: str | None, tokenizer_path=None,
                 threads: int | None = None) -> TokenCounter:
    """Pick the best token counter available for ``info`` (a catalog ModelInfo or None)."""
    threads = default_threads() if threads is None else max(1, threads)
    hf_dir = _hf_tokenizer_dir(model, tokenizer_path)
    if hf_dir is not None:
        try:
            from transformers import AutoTokenizer  # lazy: heavy, and only for local models

            tokenizer = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)

            def count(text: str) -> int:
                return len(tokenizer.encode(text, add_special_tokens=False))

            has_template = bool(getattr(tokenizer, "chat_template", None))
            return TokenCounter(
                count,
                exact=has_template,
                method=f"huggingface:{hf_dir.name}" + ("" if has_template else " (no chat template: framing estimated)"),
                hf_tokenizer=tokenizer if has_template else None,
            )
        except Exception as exc:  # noqa: BLE001 - any failure: fall back to an estimate, and say why
            fallback_note = f"could not load the tokenizer in {hf_dir} ({type(exc).__name__}); "
        else:  # pragma: no cover - the try returns
            fallback_note = ""
    else:
        fallback_note = ""

    if info is not None and info.tokenizer:
        found = _exact_counter(info.tokenizer)
        if found is not None:
            count, method, releases_gil = found
            return TokenCounter(count, exact=True, method=method, threads=threads if releases_gil else 1)
        fallback_note += (f"tiktoken {info.tokenizer} unavailable "
                          f"({_tiktoken_offline.failure_reason(info.tokenizer)}); ")

    reason = (
        "no tokenizer for this model" if info is not None else "model unknown or not given"
    )
    found = _exact_counter("o200k_base")
    if found is not None:
        count, _, releases_gil = found
        return TokenCounter(
            count,
            exact=False,
            threads=threads if releases_gil else 1,
            method="estimate:o200k_base-proxy",
            note=f"{fallback_note}{reason}: counts are an ESTIMATE using o200k_base as a proxy",
        )
    return TokenCounter(
        _bytes_estimate,
        exact=False,
        method="estimate:utf8-bytes/4",
        note=f"{fallback_note}{reason}: counts are an ESTIMATE (UTF-8 bytes / 4)",
    )


__all__ = ["TOKENS_PER_MESSAGE", "TOKENS_REPLY_PRIMING", "TokenCounter", "make_counter"]
