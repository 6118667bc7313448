"""Rules for tool use: ``tools``/``functions`` definitions, assistant
``tool_calls``/``function_call`` and what they add to the token count.

Mixed into ``Rules``; kept apart so each module stays readable.
"""

from __future__ import annotations

import json
import re

from ._problems import ERROR, WARNING

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
TOKENS_PER_TOOL_CALL = 3


def type_name(value) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


class ToolRules:
    def _check_tool_calls(self, calls, role, path, report, group, pending_calls, all_call_ids, tools,
                          trained) -> None:
        tpath = f"{path}.tool_calls"
        if role != "assistant":
            report(tpath, "invalid_tool_calls", ERROR, "tool_calls are only allowed on assistant messages")
            return
        if not isinstance(calls, list) or not calls:
            report(tpath, "invalid_tool_calls", ERROR, "tool_calls must be a non-empty list")
            return
        for index, call in enumerate(calls):
            cpath = f"{tpath}[{index}]"
            if not isinstance(call, dict):
                report(cpath, "invalid_tool_call", ERROR, f"a tool call must be an object, got {type_name(call)}")
                continue
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                report(f"{cpath}.id", "invalid_tool_call", ERROR, "a tool call needs a string 'id'")
            elif call_id in all_call_ids:
                report(f"{cpath}.id", "duplicate_tool_call_id", ERROR, f"tool call id {call_id!r} is used twice")
            else:
                all_call_ids.add(call_id)
                pending_calls[call_id] = cpath
            if call.get("type", "function") != "function":
                report(f"{cpath}.type", "invalid_tool_call", ERROR, "tool call type must be 'function'")
            function = call.get("function")
            if not isinstance(function, dict):
                report(f"{cpath}.function", "invalid_tool_call", ERROR, "a tool call needs a 'function' object")
                continue
            self._check_call_body(function, f"{cpath}.function", "invalid_tool_call", report, group, tools, trained)

    def _check_function_call(self, call, role, path, report, group, trained) -> str | None:
        fpath = f"{path}.function_call"
        if role != "assistant":
            report(fpath, "invalid_function_call", ERROR, "function_call is only allowed on assistant messages")
            return None
        if not isinstance(call, dict):
            report(fpath, "invalid_function_call", ERROR, "function_call must be an object with name and arguments")
            return None
        return self._check_call_body(call, fpath, "invalid_function_call", report, group, None, trained)

    def _check_call_body(self, body: dict, path: str, code: str, report, group, tools,
                         trained: bool) -> str | None:
        """Check a call's name and arguments; the call is what the model learns to
        emit, so its text counts as trained tokens when the message is trained."""
        name = body.get("name")
        arguments = body.get("arguments")
        ok_name = isinstance(name, str) and bool(name)
        if not ok_name:
            report(f"{path}.name", code, ERROR, "a call needs a non-empty string 'name'")
        elif tools is not None and name not in tools:
            report(f"{path}.name", "tool_call_unknown_function", WARNING,
                   f"{name!r} is not among the functions this example defines")
        if not isinstance(arguments, str):
            report(f"{path}.arguments", code, ERROR,
                   f"arguments must be a JSON-encoded string, got {type_name(arguments)}")
        else:
            try:
                json.loads(arguments)
            except (ValueError, RecursionError):
                report(f"{path}.arguments", "tool_call_arguments_not_json", ERROR,
                       "arguments must be a JSON-encoded string")
            if trained:
                group.trained.append(len(group.texts))
            group.texts.append(arguments)
        if ok_name:
            if trained:
                group.trained.append(len(group.texts))
            group.texts.append(name)
        group.overhead += TOKENS_PER_TOOL_CALL
        return name if ok_name else None

    def _check_tool_definitions(self, row: dict, prefix: str, report) -> set[str] | None:
        """Validate ``tools``/``functions``; returns the defined names (None if none are defined)."""
        names: set[str] | None = None
        for key, code in (("tools", "invalid_tools"), ("functions", "invalid_functions")):
            if key not in row:
                continue
            value = row[key]
            base = f"{prefix}{key}"
            if not isinstance(value, list):
                report(base, code, ERROR, f"'{key}' must be a list, got {type_name(value)}")
                continue
            names = names if names is not None else set()
            for index, item in enumerate(value):
                ipath = f"{base}[{index}]"
                if key == "tools":
                    if not isinstance(item, dict) or item.get("type", "function") != "function":
                        report(ipath, code, ERROR, "each tool must be an object with type 'function'")
                        continue
                    item = item.get("function")
                    ipath = f"{ipath}.function"
                if not isinstance(item, dict):
                    report(ipath, code, ERROR, "a function definition must be an object")
                    continue
                name = item.get("name")
                if not isinstance(name, str) or not NAME_PATTERN.match(name):
                    report(f"{ipath}.name", code, ERROR, "a function needs a name of 1-64 letters, digits, '_' or '-'")
                else:
                    names.add(name)
                if "description" in item and not isinstance(item["description"], str):
                    report(f"{ipath}.description", code, ERROR, "description must be a string")
                if "parameters" in item and not isinstance(item["parameters"], dict):
                    report(f"{ipath}.parameters", code, ERROR, "parameters must be a JSON Schema object")
        return names

    @staticmethod
    def _tools_overhead(row: dict, group) -> None:
        """Tool definitions are sent with every example; count them as their JSON text
        (the provider's exact framing is not published, so this is close, not exact)."""
        for key in ("tools", "functions"):
            value = row.get(key)
            if isinstance(value, list) and value:
                try:
                    group.texts.append(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
                except (TypeError, ValueError, RecursionError):
                    pass
