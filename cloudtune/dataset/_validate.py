"""validate_file: one streaming pass per file, all rules, token counts, estimate."""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from .. import catalog
from ..registry import DATASET_CHECK_PROVIDER
from ._estimate import Estimate, build_estimate
from . import _parallel
from ._fingerprints import FingerprintTable
from ._parallel import RangeResult, duplicate_message
from ._encoding import encoding_note
from ._problems import ERROR, NOTE, WARNING, Problem, ProblemSink
from ._reader import DEFAULT_MAX_LINE_BYTES, FileFacts, iter_lines, sniff_file
from ._rules import TOKENS_PER_IMAGE_ESTIMATE, Rules
from ._stats import FileStats
from ._tokens import TokenCounter, make_counter

METHODS = ("supervised", "dpo")
# Examples whose tokens are counted together: enough distinct texts to keep
# tokenizer threads busy, few enough that memory stays flat.
_BATCH = 256


@dataclass
class ValidationReport:
    path: str
    validation_path: str | None
    provider: str
    model: str | None
    method: str
    problems: list[Problem]
    problem_counts: dict[str, int]
    problems_omitted: dict[str, int]
    stats: dict
    token_counts: dict
    estimate: Estimate | None
    error_count: int = 0
    warning_count: int = 0
    _extra: dict = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when nothing would make the provider refuse the data."""
        return self.error_count == 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def processes(self) -> dict[str, int]:
        """Processes that scanned each file ("training", "validation"): 1 for one pass."""
        return dict(self._extra.get("processes", {}))

    def codes(self) -> set[str]:
        return set(self.problem_counts)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "path": self.path,
            "validation_path": self.validation_path,
            "provider": self.provider,
            "model": self.model,
            "method": self.method,
            "error_count": self.error_count,
            "warning_count": self.warning_count,
            "problem_counts": dict(sorted(self.problem_counts.items())),
            "problems_omitted": self.problems_omitted,
            "problems": [p.to_dict() for p in self.problems],
            "stats": self.stats,
            "token_counts": self.token_counts,
            "estimate": self.estimate.to_dict() if self.estimate else None,
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def render(self, *, color: bool | None = None, max_problems: int = 50) -> str:
        from ._render import render_report

        return render_report(self, color=color, max_problems=max_problems)

    def __str__(self) -> str:
        return self.render(color=False)


class _Scan:
    """One streaming pass over one file."""

    def __init__(self, *, label: str, rules: Rules, counter: TokenCounter, sink: ProblemSink,
                 context_tokens: int | None, max_line_bytes: int, leak_table: FingerprintTable | None,
                 keep_messages: bool, defer_duplicates: bool = False) -> None:
        self.label = label
        self.rules = rules
        self.counter = counter
        self.sink = sink
        self.context = context_tokens
        self.max_line_bytes = max_line_bytes
        self.leak_table = leak_table
        self.keep_messages = keep_messages
        self.facts = FileFacts()
        self.stats = FileStats()
        self.fingerprints = FingerprintTable()
        # A range of a file cannot tell a duplicate's first line: it records the
        # repeats and leaves the reporting to the merge (see _parallel).
        self.defer_duplicates = defer_duplicates
        self.repeat_lines = array("Q")
        self.repeat_keys = array("Q")
        self._pending: list = []

    def result(self) -> RangeResult:
        return RangeResult(sink=self.sink, stats=self.stats, facts=self.facts, fingerprints=self.fingerprints,
                           repeat_lines=self.repeat_lines, repeat_keys=self.repeat_keys)

    def run(self, path: Path, start: int = 0, end: int | None = None) -> None:
        sink, label = self.sink, self.label
        nonfinite: list[str] = []

        def on_constant(name: str) -> float:
            nonfinite.append(name)
            return float("nan")

        decoder = json.JSONDecoder(parse_constant=on_constant)
        decode = decoder.decode
        try:
            lines = iter_lines(path, self.facts, self.max_line_bytes, start=start, end=end)
            for line in lines:
                number = line.number
                if line.data is None:
                    sink.add(label, number, "$", "line_too_long", ERROR,
                             f"line is {line.length:,} bytes, more than the {self.max_line_bytes:,} any model "
                             "context could hold; skipped without parsing")
                    continue
                if not line.data:
                    sink.add(label, number, "$", "blank_line", WARNING, "blank line (skipped)")
                    continue
                try:
                    text = line.data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    sink.add(label, number, "$", "invalid_utf8", ERROR,
                             f"invalid UTF-8 at byte {exc.start} of the line; save the file as UTF-8")
                    continue
                if nonfinite:
                    nonfinite.clear()
                try:
                    row = decode(text)
                except RecursionError:
                    sink.add(label, number, "$", "json_too_deep", ERROR, "JSON nested too deeply to parse")
                    continue
                except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
                    sink.add(label, number, "$", "invalid_json", ERROR, f"invalid JSON: {_json_error(exc)}")
                    continue
                self._check(number, line.data, row, nonfinite)
            self.flush()
        except OSError as exc:
            self.facts.fatal = "file_unreadable"
            self.facts.fatal_detail = f"cannot read {path}: {exc.strerror or exc}"

    def _check(self, number: int, raw: bytes, row, nonfinite: list[str]) -> None:
        sink, label = self.sink, self.label
        errors_before = sink.error_count

        def report(path: str, code: str, severity: str, message: str) -> None:
            sink.add(label, number, path, code, severity, message)

        if nonfinite:
            report("$", "invalid_json_constant", ERROR,
                   f"{', '.join(sorted(set(nonfinite)))} is not valid JSON (write a number or a string)")
        if isinstance(row, list) and row and all(isinstance(item, dict) for item in row[:3]):
            self.facts.array_lines += 1
            report("$", "json_array_not_jsonl", ERROR,
                   f"this line is a JSON array of {len(row):,} items; JSONL needs one JSON object per line")
            return
        try:
            summary = self.rules.check_row(row, report)
        except RecursionError:
            report("$", "json_too_deep", ERROR, "JSON nested too deeply to check")
            return
        except Exception as exc:  # noqa: BLE001 - a user's file must never produce a traceback
            report("$", "validator_error", ERROR, f"internal error while checking this line: {type(exc).__name__}")
            return
        stats = self.stats
        fingerprint = hash(raw.strip())
        first = self.fingerprints.add(fingerprint, number)
        if first is not None:
            if self.defer_duplicates:
                self.repeat_lines.append(number)
                self.repeat_keys.append(FingerprintTable.key(fingerprint))
            else:
                stats.duplicates += 1
                report("$", "duplicate_example", WARNING, duplicate_message(first))
        if self.leak_table is not None:
            training_line = self.leak_table.get(fingerprint)
            if training_line is not None:
                report("$", "validation_leak", WARNING,
                       f"same example as training line {training_line}: validation metrics would be inflated")
        if summary is None:
            return
        stats.examples += 1
        messages = row.get("messages") if self.keep_messages else None
        self._pending.append((number, summary, messages, sink.error_count == errors_before))
        if len(self._pending) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        """Count tokens for the pending examples (distinct new texts in parallel
        where the machine has the cores), then record their statistics."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        if self.counter.threaded:
            self.counter.prefetch(text for _, summary, _, _ in pending for group in summary.groups
                                  for text in group.texts)
        stats, sink, label, context = self.stats, self.sink, self.label, self.context
        for number, summary, messages, usable in pending:
            try:
                tokens, trained, longest = self.counter.count(summary, messages)
            except BaseException as exc:  # noqa: BLE001 - e.g. a tokenizer refusing odd text: report, go on
                if not isinstance(exc, Exception) and not _is_rust_panic(exc):
                    raise  # KeyboardInterrupt, SystemExit
                sink.add(label, number, "$", "validator_error", ERROR, f"could not count tokens: {type(exc).__name__}")
                continue
            if context is not None and longest > context:
                stats.over_context += 1
                sink.add(label, number, "$", "example_too_long", WARNING,
                         f"{longest:,} tokens, more than the model's {context:,}-token training context: "
                         "it will be truncated")
            stats.billed_tokens_per_epoch += min(tokens, context) if context else tokens
            stats.messages.add(summary.messages)
            stats.tokens.add(tokens)
            stats.assistant_tokens.add(trained)
            stats.images += summary.images
            for role, count in summary.roles.items():
                stats.roles[role] += count
            if usable:
                stats.usable_examples += 1
        self.counter.end_batch()


def _is_rust_panic(exc: BaseException) -> bool:
    """A panic inside a Rust extension (tiktoken overflows its stack on a ~2 MB
    run of spaces) reaches Python as pyo3's PanicException, a BaseException."""
    return type(exc).__name__ == "PanicException"


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return str(exc).split("\n", 1)[0][:200]


def _plan_ranges(path: Path, workers: int | None, counter: TokenCounter):
    """Byte ranges to validate in parallel, or None for one pass: a file too
    small to pay for the processes, one core, a Hugging Face tokenizer (its own
    thread pool does not survive a fork), a host process running threads, or
    a file whose first bytes already make it unreadable."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    count = _parallel.worker_count(size, workers)
    if count < 2 or counter._hf is not None:
        return None
    counter.close()  # its tokenizer threads (tiktoken) would forbid the fork; they restart when needed
    if not _parallel.can_fork():
        return None
    try:
        if not sniff_file(path):
            return None
        ranges = _parallel.split_ranges(path, size, count)
    except OSError:
        return None
    return ranges if len(ranges) > 1 else None


def _file_checks(scan: _Scan, rules: catalog.ProviderDataRules, provider: str, *, is_training: bool) -> None:
    facts, sink, label = scan.facts, scan.sink, scan.label
    if facts.fatal:
        sink.add(label, 0 if facts.fatal in ("binary_file", "utf16_file", "file_unreadable") else 1, "$", facts.fatal, ERROR,
                 facts.fatal_detail)
    if rules.max_upload_bytes is not None and facts.size_bytes > rules.max_upload_bytes:
        sink.add(label, 0, "$", "file_too_large", ERROR,
                 f"{facts.size_bytes:,} bytes; {provider} accepts at most {rules.max_upload_bytes:,}")
    elif rules.max_file_bytes is not None and facts.size_bytes > rules.max_file_bytes:
        sink.add(label, 0, "$", "file_needs_upload_api", WARNING,
                 f"{facts.size_bytes:,} bytes is over the {rules.max_file_bytes:,}-byte single-file limit; "
                 "it will go through the multi-part Uploads API")
    # one file for every provider: the upload copy gets the provider's BOM (dataset/_encoding.py)
    bom_note = encoding_note(provider, facts.bom) if facts.lines and not facts.fatal else None
    if bom_note is not None:
        sink.add(label, 1, "$", "bom_adjusted", NOTE, bom_note)
    if facts.fatal is None and scan.stats.examples == 0 and facts.lines == facts.blank_lines:
        sink.add(label, 0, "$", "empty_file", ERROR, "the file holds no examples")
    elif is_training and facts.fatal is None and not facts.array_lines and scan.stats.examples < rules.min_examples:
        sink.add(label, 0, "$", "too_few_examples", ERROR,
                 f"{scan.stats.examples} example(s); {provider} needs at least {rules.min_examples}")


def _file_stats(scan: _Scan) -> dict:
    facts = scan.facts
    out = {
        "size_bytes": facts.size_bytes,
        "bom": facts.bom,
        "line_endings": facts.line_endings,
        "blank_lines": facts.blank_lines,
    }
    out.update(scan.stats.to_dict())
    out["lines"] = facts.lines
    return out


def validate_file(path, *, provider: str = DATASET_CHECK_PROVIDER, model: str | None = None, method: str = "supervised",
                  validation_path=None, prices: dict[str, float] | None = None, epochs: int | None = None,
                  tokenizer_path=None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                  problems_per_code: int = 200, token_threads: int | None = None,
                  workers: int | None = None) -> ValidationReport:
    """Check a JSONL training file (and optional validation file) for ``provider``
    and ``model`` without loading it into memory; never raises on file content.

    ``prices`` overrides the catalog's USD per 1M training tokens, keyed by model
    name; ``epochs`` replaces the automatic epoch rule; ``tokenizer_path`` points
    at a local Hugging Face tokenizer directory (local models); ``token_threads``
    sets the tokenizer threads (default: one per available core, up to 8);
    ``workers`` the processes that share a large file (default: one per
    available core, up to 8, each with at least 16 MB of it; 1 for one pass;
    ``CLOUDTUNE_VALIDATE_WORKERS`` overrides the default). The report is the
    same whatever the number of workers."""
    method = str(getattr(method, "value", method))
    provider = str(provider)
    sink = ProblemSink(per_code_limit=problems_per_code)
    rules = catalog.provider_rules(provider)
    info = catalog.lookup_model(provider, model)
    if method not in METHODS:
        sink.add("training", 0, "$", "method_not_supported", ERROR,
                 f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        method = "supervised"
    if model and info is None:
        sink.add("training", 0, "$", "unknown_model", WARNING,
                 f"{model!r} is not in cloudtune's {provider} catalog: no context limit or price; "
                 "token counts are estimated")
    elif info is not None and method not in info.methods:
        sink.add("training", 0, "$", "method_not_supported", ERROR,
                 f"{info.name} supports {', '.join(info.methods)} fine-tuning, not {method}")
    counter = make_counter(info, provider=provider, model=model, tokenizer_path=tokenizer_path,
                           threads=token_threads)
    context = info.context_tokens if info is not None else None
    row_rules = Rules(provider_rules=rules, method=method, special_tokens=rules.special_tokens)
    keep_messages = counter._hf is not None

    processes: dict[str, int] = {}

    def new_scan(label, leak_table, into_sink, defer_duplicates=False):
        return _Scan(label=label, rules=row_rules, counter=counter, sink=into_sink, context_tokens=context,
                     max_line_bytes=max_line_bytes, leak_table=leak_table, keep_messages=keep_messages,
                     defer_duplicates=defer_duplicates)

    def scan(file_path, label, leak_table):
        job = new_scan(label, leak_table, sink)
        ranges = _plan_ranges(Path(file_path), workers, counter)
        results = None
        if ranges is not None:
            def scan_range(start, end):
                part = new_scan(label, leak_table, ProblemSink(per_code_limit=problems_per_code), True)
                part.run(Path(file_path), start, end)
                return part.result()

            with counter.single_threaded():  # the processes share the cores out now
                results = _parallel.run_ranges(ranges, scan_range)
        if results is not None:
            job.fingerprints = _parallel.merge_ranges(results, label=label, sink=sink, stats=job.stats,
                                                      facts=job.facts)
        else:
            job.run(Path(file_path))
        processes[label] = len(results) if results is not None else 1
        _file_checks(job, rules, provider, is_training=(label == "training"))
        return job

    try:
        training = scan(path, "training", None)
        validation = scan(validation_path, "validation", training.fingerprints) if validation_path else None
    finally:
        counter.close()
    del training.fingerprints  # free the table before building the report

    stats = {"training": _file_stats(training)}
    if validation is not None:
        stats["validation"] = _file_stats(validation)
    token_counts = {
        "tokenizer": counter.method,
        "exact": counter.exact,
        "note": counter.note or None,
        "context_tokens": context,
        "training": {"total": training.stats.tokens.total, "assistant": training.stats.assistant_tokens.total},
    }
    images = training.stats.images + (validation.stats.images if validation is not None else 0)
    if images:
        token_counts["images_note"] = (
            f"{images:,} image(s) counted at {TOKENS_PER_IMAGE_ESTIMATE} tokens each (low-detail figure): "
            "image tokens are an ESTIMATE")
    if validation is not None:
        token_counts["validation"] = {"total": validation.stats.tokens.total,
                                      "assistant": validation.stats.assistant_tokens.total}
    price = catalog.price_for(info, prices)
    if prices and model and model in prices and price[1] != "override":
        price = (float(prices[model]), "override", "user-supplied prices")
    estimate = None
    if training.stats.examples:
        estimate = build_estimate(
            examples=training.stats.examples,
            billed_tokens_per_epoch=training.stats.billed_tokens_per_epoch,
            context_tokens=context,
            epochs=epochs,
            tokens_exact=counter.exact,
            tokenizer=counter.method,
            price=price,
        )
    problems = sorted(sink.kept, key=lambda p: (p.file != "training", p.line, p.path, p.code))
    return ValidationReport(
        path=str(path),
        validation_path=str(validation_path) if validation_path else None,
        provider=provider,
        model=info.name if info is not None else model,
        method=method,
        problems=problems,
        problem_counts=dict(sink.counts),
        problems_omitted=sink.omitted(),
        stats=stats,
        token_counts=token_counts,
        estimate=estimate,
        error_count=sink.error_count,
        warning_count=sink.warning_count,
        _extra={"processes": processes},
    )
