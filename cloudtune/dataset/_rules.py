"""The per-example rules: one parsed JSON line in, problems and the texts to
count tokens for out.

A superset of the OpenAI cookbook's data-prep checks (same codes where the
cookbook has one), plus what it crashes on or misjudges: weights, names,
tool calls and the tool messages answering them, tool/function definitions,
``content: null`` beside a call, multimodal parts, preference (DPO) rows.

Everything here assumes nothing about the JSON value it is given: any type,
any shape. Problems are reported through ``ctx.report(path, code, severity,
message)``.
"""

from __future__ import annotations

import json
import re

from ._problems import ERROR, WARNING
from ._rules_tools import NAME_PATTERN as _NAME
from ._rules_tools import ToolRules, type_name as _type_name

ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"})
CHAT_ROW_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
DPO_ROW_KEYS = frozenset({"input", "preferred_output", "non_preferred_output",
                          "preferred_completion", "non_preferred_completion"})
DPO_INPUT_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
_IMAGE_DATA_URL = re.compile(r"data:image/(jpeg|jpg|png|webp|gif);base64,", re.IGNORECASE)
# Tokens per message, per name and for priming the reply, as OpenAI's
# cookbook counts them for chat models.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3
# Images are billed by size and detail; without decoding them we count the
# low-detail figure and say so.
TOKENS_PER_IMAGE_ESTIMATE = 85


class Group:
    """Texts of one token sequence (a chat example, or one part of a DPO row)."""

    __slots__ = ("texts", "trained", "overhead")

    def __init__(self) -> None:
        self.texts: list[str] = []  # everything that is tokenized
        self.trained: list[int] = []  # indices into texts: assistant texts the model learns from
        self.overhead = 0  # fixed tokens (message framing, images)


class Summary:
    """What the token counter and the statistics need from one example."""

    __slots__ = ("groups", "messages", "roles", "images", "dpo")

    def __init__(self) -> None:
        self.groups: list[Group] = []
        self.messages = 0
        self.roles: dict[str, int] = {}
        self.images = 0
        self.dpo = False


class Rules(ToolRules):
    """Checks bound to one provider's data rules and one method."""

    def __init__(self, *, provider_rules, method: str, special_tokens: tuple[str, ...]) -> None:
        self.provider_rules = provider_rules
        self.method = method
        self.special_severity = ERROR if provider_rules.special_tokens_are_errors else WARNING
        self._special = re.compile("|".join(re.escape(t) for t in special_tokens)) if special_tokens else None

    # ------------------------------------------------------------------ rows

    def check_row(self, row, report) -> Summary | None:
        if not isinstance(row, dict):
            report("$", "data_type", ERROR, f"each line must be a JSON object, got {_type_name(row)}")
            return None
        is_preference = "input" in row or "preferred_output" in row or "preferred_completion" in row
        if self.method == "dpo":
            if not is_preference:
                if "messages" in row:
                    report("$", "dpo_expected_preference_row", ERROR,
                           "method is dpo: each line needs input, preferred_output and non_preferred_output")
                else:
                    report("input", "dpo_missing_input", ERROR, "no 'input' object with messages")
                return None
            return self._check_preference_row(row, report)
        if is_preference and "messages" not in row:
            report("$", "dpo_row_in_supervised", ERROR,
                   "this is a preference (DPO) row; use --method dpo, or give a 'messages' list")
            return None
        return self._check_chat_row(row, report)

    def _check_chat_row(self, row: dict, report) -> Summary | None:
        for key in row:
            if key not in CHAT_ROW_KEYS:
                report(_key_path(key), "unrecognized_key", WARNING, f"unrecognized top-level key {key!r}")
        tools = self._check_tool_definitions(row, "", report)
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            report("messages", "missing_messages_list", ERROR,
                   "no 'messages' list" if messages is None else
                   "'messages' is empty" if isinstance(messages, list) else
                   f"'messages' must be a list, got {_type_name(messages)}")
            return None
        summary = Summary()
        group = Group()
        summary.groups.append(group)
        self._tools_overhead(row, group)
        seen = self._check_messages(messages, "messages", report, summary, group, tools)
        if "assistant" not in seen:
            report("messages", "example_missing_assistant_message", ERROR, "no assistant message to learn from")
        else:
            last = messages[-1]
            if not (isinstance(last, dict) and last.get("role") == "assistant"):
                report(f"messages[{len(messages) - 1}]", "last_message_not_assistant", WARNING,
                       "the example does not end with an assistant message")
            if not group.trained and seen.get("trainable_assistant", 0) == 0 and seen.get("assistant_weight0"):
                report("messages", "no_trainable_assistant_message", WARNING,
                       "every assistant message has weight 0: nothing to learn from this example")
        if "system" not in seen:
            report("messages", "missing_system_message", WARNING, "no system message")
        if "user" not in seen:
            report("messages", "missing_user_message", WARNING, "no user message")
        return summary

    def _check_preference_row(self, row: dict, report) -> Summary | None:
        for key in row:
            if key not in DPO_ROW_KEYS:
                report(_key_path(key), "unrecognized_key", WARNING, f"unrecognized top-level key {key!r}")
        summary = Summary()
        summary.dpo = True
        source = row.get("input")
        input_group = Group()
        summary.groups.append(input_group)
        usable = True
        if not isinstance(source, dict) or not isinstance(source.get("messages"), list) or not source["messages"]:
            report("input" if not isinstance(source, dict) else "input.messages", "dpo_missing_input", ERROR,
                   "'input' must be an object with a non-empty 'messages' list")
            usable = False
        else:
            for key in source:
                if key not in DPO_INPUT_KEYS:
                    report(f"input.{key}", "unrecognized_key", WARNING, f"unrecognized key {key!r} in input")
            tools = self._check_tool_definitions(source, "input.", report)
            self._tools_overhead(source, input_group)
            messages = source["messages"]
            self._check_messages(messages, "input.messages", report, summary, input_group, tools, dpo_input=True)
            last = messages[-1]
            if not (isinstance(last, dict) and last.get("role") == "user"):
                report(f"input.messages[{len(messages) - 1}]", "dpo_input_not_ending_with_user", WARNING,
                       "preference input should end with the user message the outputs answer")
        outputs = []
        for preferred_key, alias in (("preferred_output", "preferred_completion"),
                                     ("non_preferred_output", "non_preferred_completion")):
            key = preferred_key if preferred_key in row else alias if alias in row else preferred_key
            value = row.get(key)
            group = Group()
            summary.groups.append(group)
            if (not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict)
                    or value[0].get("role") != "assistant"):
                report(key, "dpo_invalid_output", ERROR,
                       f"'{key}' must be a list with exactly one assistant message")
                usable = False
                continue
            self._check_messages(value, key, report, summary, group, None, dpo_output=True)
            outputs.append(value[0])
        if len(outputs) == 2 and outputs[0] == outputs[1]:
            report("non_preferred_output", "dpo_identical_outputs", WARNING,
                   "the preferred and non-preferred outputs are identical: nothing to learn")
        return summary if usable else None

    # ----------------------------------------------------------- messages

    def _check_messages(self, messages: list, base: str, report, summary: Summary, group: Group,
                        tools, *, dpo_input: bool = False, dpo_output: bool = False) -> dict:
        seen: dict[str, int] = {}
        pending_calls: dict[str, str] = {}  # id -> path of the assistant message that made it
        all_call_ids: set[str] = set()
        pending_function: str | None = None
        roles = summary.roles
        texts = group.texts
        trained_indices = group.trained
        special = self._special
        summary.messages += len(messages)
        group.overhead += TOKENS_PER_MESSAGE * len(messages)
        for index, message in enumerate(messages):
            # The common case first, at a fraction of the cost: exactly a system,
            # user or assistant role and non-blank string content, no tool call
            # waiting for an answer. Everything below would find nothing else
            # to say about such a message but a special token.
            if type(message) is dict and len(message) == 2 and not pending_calls:
                role = message.get("role")
                content = message.get("content")
                if ((role == "user" or role == "assistant" or role == "system") and type(content) is str
                        and content and not content.isspace()):
                    roles[role] = roles.get(role, 0) + 1
                    seen[role] = seen.get(role, 0) + 1
                    texts.append(role)
                    if special is not None and "<|" in content:
                        self._report_special(content, f"{base}[{index}].content", report)
                    if role == "assistant":
                        trained_indices.append(len(texts))
                    texts.append(content)
                    continue
            path = f"{base}[{index}]"
            if not isinstance(message, dict):
                report(path, "data_type", ERROR, f"each message must be an object, got {_type_name(message)}")
                continue
            role = message.get("role")
            for key in message:
                if key not in MESSAGE_KEYS:
                    report(_key_path(key, path), "message_unrecognized_key", ERROR, f"unrecognized message key {key!r}")
            if role is None:
                report(f"{path}.role", "message_missing_key", ERROR, "message without a 'role'")
                continue
            if not isinstance(role, str) or role not in ROLES:
                report(f"{path}.role", "unrecognized_role", ERROR, f"unrecognized role {role!r}")
                continue
            roles[role] = roles.get(role, 0) + 1
            seen[role] = seen.get(role, 0) + 1
            texts.append(role)

            if role in ("user", "assistant") and pending_calls:
                for call_id, call_path in pending_calls.items():
                    report(call_path, "tool_call_unanswered", WARNING,
                           f"tool call {call_id!r} gets no tool message before the conversation goes on")
                pending_calls.clear()

            has_call = False
            trained = role == "assistant"
            if "weight" in message:
                weight = message["weight"]
                if role != "assistant":
                    report(f"{path}.weight", "weight_not_on_assistant", ERROR,
                           "weight is only allowed on assistant messages")
                elif isinstance(weight, bool) or weight not in (0, 1) or not isinstance(weight, (int, float)):
                    report(f"{path}.weight", "invalid_weight", ERROR, f"weight must be 0 or 1, got {weight!r}")
                elif weight == 0:
                    trained = False
                    seen["assistant_weight0"] = seen.get("assistant_weight0", 0) + 1
            if "name" in message:
                name = message["name"]
                if not isinstance(name, str) or not _NAME.match(name):
                    report(f"{path}.name", "invalid_name", ERROR,
                           "name must be 1-64 letters, digits, '_' or '-'")
                else:
                    texts.append(name)
                    group.overhead += TOKENS_PER_NAME
            if "tool_calls" in message:
                has_call = True
                self._check_tool_calls(message["tool_calls"], role, path, report, group, pending_calls,
                                       all_call_ids, tools, trained)
            if "function_call" in message:
                has_call = True
                pending_function = self._check_function_call(message["function_call"], role, path, report, group,
                                                             trained)
            if role == "tool":
                call_id = message.get("tool_call_id")
                if "tool_call_id" not in message:
                    report(f"{path}.tool_call_id", "message_missing_key", ERROR,
                           "a tool message needs the 'tool_call_id' it answers")
                elif not isinstance(call_id, str) or call_id not in pending_calls:
                    report(f"{path}.tool_call_id", "tool_call_id_unknown", ERROR,
                           f"tool_call_id {call_id!r} answers no preceding, unanswered assistant tool call")
                else:
                    del pending_calls[call_id]
                    texts.append(call_id)
            elif "tool_call_id" in message:
                report(f"{path}.tool_call_id", "message_unrecognized_key", ERROR,
                       "tool_call_id belongs on tool messages only")
            if role == "function":
                if "name" not in message:
                    report(f"{path}.name", "message_missing_key", ERROR, "a function message needs the function 'name'")
                if pending_function is None:
                    report(path, "function_message_without_call", WARNING,
                           "function message answers no preceding assistant function_call")
                pending_function = None

            self._check_content(message, role, path, report, summary, group, has_call, trained)
        if "assistant" in seen:
            seen["trainable_assistant"] = seen["assistant"] - seen.get("assistant_weight0", 0)
        if not dpo_input and not dpo_output:
            group.overhead += TOKENS_REPLY_PRIMING
        return seen

    def _check_content(self, message: dict, role: str, path: str, report, summary: Summary, group: Group,
                       has_call: bool, trained: bool) -> None:
        cpath = f"{path}.content"
        if "content" not in message:
            if not has_call:
                report(cpath, "message_missing_key", ERROR, "message without 'content'")
            return
        content = message["content"]
        if content is None:
            if not (has_call and role == "assistant"):
                report(cpath, "missing_content", ERROR,
                       "content is null; only an assistant message with a tool or function call may omit it")
            return
        if isinstance(content, str):
            if not content or content.isspace():  # what strip() would empty, without copying the text
                severity = ERROR if trained and not has_call else WARNING
                report(cpath, "empty_content", severity, "content is empty or whitespace only")
            elif "<|" in content and self._special is not None:
                self._report_special(content, cpath, report)
            if trained:
                group.trained.append(len(group.texts))
            group.texts.append(content)
            return
        if isinstance(content, list):
            self._check_parts(content, role, cpath, report, summary, group, trained)
            return
        report(cpath, "missing_content", ERROR,
               f"content must be a string or a list of content parts, got {_type_name(content)}")

    def _check_parts(self, parts: list, role: str, cpath: str, report, summary: Summary, group: Group,
                     trained: bool) -> None:
        if not parts:
            report(cpath, "empty_content", ERROR if trained else WARNING, "content is an empty list")
            return
        any_text = False
        for index, part in enumerate(parts):
            ppath = f"{cpath}[{index}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    report(f"{ppath}.text", "invalid_content_part", ERROR, "a text part needs a string 'text'")
                    continue
                if text.strip():
                    any_text = True
                if "<|" in text and self._special is not None:
                    self._report_special(text, f"{ppath}.text", report)
                if trained:
                    group.trained.append(len(group.texts))
                group.texts.append(text)
            elif kind == "image_url":
                if not self.provider_rules.multimodal:
                    report(ppath, "multimodal_not_supported", ERROR, "this provider does not accept image parts")
                    continue
                if role != "user":
                    report(ppath, "image_not_in_user_message", ERROR, "images are only accepted in user messages")
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else None
                if not isinstance(url, str):
                    report(f"{ppath}.image_url.url", "invalid_content_part", ERROR,
                           "an image part needs image_url.url")
                    continue
                if not (url.startswith("https://") or _IMAGE_DATA_URL.match(url)):
                    report(f"{ppath}.image_url.url", "invalid_image_url", ERROR,
                           "image url must be https:// or a data:image/...;base64, URL")
                    continue
                any_text = True
                summary.images += 1
                group.overhead += TOKENS_PER_IMAGE_ESTIMATE
            else:
                report(f"{ppath}.type" if isinstance(part, dict) else ppath, "invalid_content_part", ERROR,
                       f"content part type must be 'text' or 'image_url', got {kind!r}" if isinstance(part, dict)
                       else f"a content part must be an object, got {_type_name(part)}")
        if not any_text:
            report(cpath, "empty_content", ERROR if trained else WARNING, "content parts hold no text or image")

    def _report_special(self, text: str, path: str, report) -> None:
        found = sorted({match.group(0) for match in self._special.finditer(text)})
        if found:
            where = "refused by the provider" if self.special_severity == ERROR else "treated as control tokens"
            report(path, "special_token", self.special_severity,
                   f"special token(s) {', '.join(found)} inside content ({where}); remove or escape them")

def _key_path(key, base: str | None = None) -> str:
    key = str(key)
    simple = key.isidentifier()
    part = key if simple else json.dumps(key)
    if base is None:
        return part if simple else f"[{part}]"
    return f"{base}.{part}" if simple else f"{base}[{part}]"
