"""How the emulators answer a judge prompt (``cloudtune compare --judge``): like a capable
model following the instruction, with exactly one JSON verdict object. The emulated judge
prefers the answer whose words overlap the reference more (a tie when equal), so offline
runs exercise the whole judging path with verdicts that mean something."""

from __future__ import annotations

import json
import re
from typing import Any

_MARKER = "Reply with exactly one JSON object"
_WORD = re.compile(r"\w+")


def _overlap(answer: str, reference: str) -> float:
    a, r = set(_WORD.findall(answer.lower())), set(_WORD.findall(reference.lower()))
    return len(a & r) / len(a | r) if a | r else 1.0


def judge_reply(prompt: str) -> str | None:
    """The verdict object for a judge prompt; None when ``prompt`` is not one."""
    if _MARKER not in prompt or "Inputs: " not in prompt:
        return None
    try:
        inputs: Any = json.loads(prompt.rsplit("Inputs: ", 1)[1])
        first, second, reference = str(inputs["first"]), str(inputs["second"]), str(inputs["reference"])
    except (ValueError, KeyError, TypeError):
        return None
    a, b = _overlap(first, reference), _overlap(second, reference)
    verdict = "tie" if abs(a - b) < 1e-9 else ("first" if a > b else "second")
    return json.dumps({"verdict": verdict, "reason": f"word overlap with the reference {a:.2f} vs {b:.2f}"})
