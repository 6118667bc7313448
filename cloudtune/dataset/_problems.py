"""Problems found in a dataset, and the sink that collects them.

Every problem names the file, the 1-based line (0 for the file as a whole), a
JSON path inside that line (``messages[2].role``; ``$`` for the whole line),
a stable machine code and a sentence for the person at the terminal.

The sink keeps at most ``per_code_limit`` problems of each code and counts the
rest, so a million broken lines cannot make memory grow without bound.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

ERROR = "error"
WARNING = "warning"
NOTE = "note"  # what cloudtune does for you (never stops a run)

# Every code the validator can emit, with a one-line description. Tests check
# that each one is reachable; the CLI's --json output is keyed on these.
CODES: dict[str, str] = {
    # file level
    "file_unreadable": "the file does not exist or cannot be read",
    "empty_file": "the file has no examples",
    "binary_file": "the file is binary, not UTF-8 text",
    "utf16_file": "the file is UTF-16/32 encoded; JSONL must be UTF-8",
    "bom_adjusted": "the upload copy gets the byte-order mark this provider wants (added or stripped)",
    "json_array_not_jsonl": "the file is one JSON array, not one JSON object per line",
    "pretty_printed_json": "JSON spread over several lines; JSONL needs one example per line",
    "file_too_large": "larger than anything this provider accepts",
    "file_needs_upload_api": "larger than a single file upload; needs the multi-part upload route",
    "too_few_examples": "fewer usable examples than the provider's minimum",
    "unknown_model": "model not in cloudtune's catalog: no context length or price",
    "method_not_supported": "the model cannot be fine-tuned with this method",
    # line level: parsing
    "invalid_utf8": "bytes that are not valid UTF-8",
    "invalid_json": "the line is not valid JSON",
    "invalid_json_constant": "NaN or Infinity, which JSON does not allow",
    "json_too_deep": "JSON nested too deeply to process",
    "line_too_long": "a line too long for any model context; skipped without parsing",
    "blank_line": "an empty line inside the file",
    "validator_error": "cloudtune could not check this line (a bug; please report it)",
    # example level (cookbook codes first)
    "data_type": "a value of the wrong JSON type",
    "missing_messages_list": "no non-empty 'messages' list",
    "message_missing_key": "a message without a required key",
    "message_unrecognized_key": "a message key the provider does not accept",
    "unrecognized_role": "a role other than system, user, assistant, tool or function",
    "missing_content": "a message without content (and no tool or function call)",
    "example_missing_assistant_message": "an example with no assistant message to learn from",
    "missing_system_message": "an example without a system message",
    "missing_user_message": "an example without a user message",
    # example level: beyond the cookbook
    "unrecognized_key": "a top-level key the provider does not accept",
    "empty_content": "empty or whitespace-only content",
    "last_message_not_assistant": "the example does not end with an assistant turn",
    "no_trainable_assistant_message": "every assistant message has weight 0",
    "invalid_weight": "weight must be 0 or 1",
    "weight_not_on_assistant": "weight is only allowed on assistant messages",
    "invalid_name": "name must be a short identifier string",
    "invalid_tool_calls": "tool_calls must be a non-empty list on an assistant message",
    "invalid_tool_call": "a tool call without a valid id, type, function name or arguments",
    "tool_call_arguments_not_json": "tool call arguments that are not a JSON string",
    "duplicate_tool_call_id": "two tool calls with the same id",
    "tool_call_id_unknown": "a tool message answering no preceding, unanswered call id",
    "tool_call_unanswered": "a tool call that no tool message answers before the conversation goes on",
    "tool_call_unknown_function": "a call to a function the example's tools do not define",
    "invalid_function_call": "function_call must be an object with a name and string arguments",
    "function_message_without_call": "a function message that answers no preceding function_call",
    "invalid_tools": "tools must be a list of function definitions",
    "invalid_functions": "functions must be a list of function definitions",
    "invalid_content_part": "a content part that is not a valid text or image part",
    "multimodal_not_supported": "image content parts, which this provider does not accept",
    "image_not_in_user_message": "images are only accepted in user messages",
    "invalid_image_url": "an image url that is neither https nor a base64 data URL",
    "special_token": "a tokenizer control token inside content",
    "example_too_long": "more tokens than the model's training context",
    "duplicate_example": "the same example appears earlier in the file",
    "validation_leak": "a validation example that also appears in the training file",
    # preference (DPO) rows
    "dpo_missing_input": "a preference row without an 'input' object with messages",
    "dpo_invalid_output": "preferred/non-preferred output must be one assistant message",
    "dpo_identical_outputs": "the preferred and non-preferred outputs are the same",
    "dpo_input_not_ending_with_user": "preference input should end with a user message",
    "dpo_row_in_supervised": "a preference row in a supervised dataset",
    "dpo_expected_preference_row": "a chat row where a preference (DPO) row is expected",
}


@dataclass(frozen=True)
class Problem:
    line: int
    path: str
    code: str
    severity: str
    message: str
    file: str = "training"

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        path = "" if self.path == "$" else f" {self.path}"
        return f"{self.file} {where}{path}: {self.severity} [{self.code}] {self.message}"


class ProblemSink:
    """Collects problems with a per-code cap; counts everything."""

    def __init__(self, per_code_limit: int = 200) -> None:
        self.per_code_limit = per_code_limit
        self.kept: list[Problem] = []
        self.counts: Counter[str] = Counter()
        self.severity_counts: Counter[str] = Counter()
        self._severity_of: dict[str, str] = {}
        self.error_count = 0  # read once or twice per line: a plain attribute, not a Counter lookup

    def add(self, file: str, line: int, path: str, code: str, severity: str, message: str) -> None:
        self.counts[code] += 1
        self.severity_counts[severity] += 1
        if severity == ERROR:
            self.error_count += 1
        self._severity_of[code] = severity
        if self.counts[code] <= self.per_code_limit:
            self.kept.append(Problem(line=line, path=path or "$", code=code, severity=severity,
                                     message=message, file=file))

    def merge(self, other: "ProblemSink", line_offset: int) -> None:
        """Append what ``other`` collected on a later part of the same file, its
        line numbers shifted by ``line_offset``: the kept problems are then the
        first ``per_code_limit`` of each code in line order, as one pass keeps."""
        taken = {code: min(count, self.per_code_limit) for code, count in self.counts.items()}
        for problem in other.kept:
            if taken.get(problem.code, 0) < self.per_code_limit:
                taken[problem.code] = taken.get(problem.code, 0) + 1
                self.kept.append(Problem(line=problem.line + line_offset if problem.line else 0, path=problem.path,
                                         code=problem.code, severity=problem.severity, message=problem.message,
                                         file=problem.file))
        self.counts.update(other.counts)
        self.severity_counts.update(other.severity_counts)
        self.error_count += other.error_count
        self._severity_of.update(other._severity_of)

    @property
    def warning_count(self) -> int:
        return self.severity_counts[WARNING]

    def omitted(self) -> dict[str, int]:
        """Codes whose problems were counted but not all kept."""
        return {code: n - self.per_code_limit for code, n in self.counts.items() if n > self.per_code_limit}
