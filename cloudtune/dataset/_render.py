"""Human rendering of a ValidationReport: rich when writing to a terminal,
plain text otherwise (pipes, CI logs, tests). rich is imported lazily."""

from __future__ import annotations

import io

PER_CODE_SHOWN = 5


def _plain_lines(report, max_problems: int) -> list[str]:
    lines: list[str] = []
    verdict = "USABLE" if report.ok else "NOT USABLE"
    lines.append(f"{verdict}: {report.path} for {report.provider}"
                 + (f" / {report.model}" if report.model else "") + f" ({report.method})")
    lines.append(f"{report.error_count} error(s), {report.warning_count} warning(s)")
    # Errors first; at most a few of each code, so one repeated warning does not
    # bury the one error that matters.
    per_code: dict[str, int] = {}
    shown = 0
    for problem in sorted(report.problems, key=lambda p: p.severity != "error"):
        if shown >= max_problems:
            break
        per_code[problem.code] = per_code.get(problem.code, 0) + 1
        if per_code[problem.code] > PER_CODE_SHOWN:
            continue
        lines.append(f"  {problem}")
        shown += 1
    notes = sum(1 for p in report.problems if p.severity == "note")
    hidden = (report.error_count + report.warning_count + notes) - shown
    if hidden > 0:
        lines.append(f"  ... and {hidden} more (counts per code below; --json lists them)")
    if report.problem_counts:
        counts = ", ".join(f"{code}={n}" for code, n in sorted(report.problem_counts.items()))
        lines.append(f"problem counts: {counts}")
    for label, stats in report.stats.items():
        lines.append(f"{label}: {stats['examples']:,} examples ({stats['usable_examples']:,} without errors), "
                     f"{stats['lines']:,} lines, {stats['size_bytes']:,} bytes, line endings {stats['line_endings']}"
                     + (", UTF-8 BOM" if stats["bom"] else ""))
        roles = ", ".join(f"{role}={n:,}" for role, n in stats["roles"].items())
        if roles:
            lines.append(f"  roles: {roles}")
        for key, title in (("messages_per_example", "messages/example"), ("tokens_per_example", "tokens/example"),
                           ("assistant_tokens_per_example", "assistant tokens/example")):
            s = stats[key]
            if s["count"]:
                lines.append(f"  {title:<25} total={s['total']:,} min={s['min']} mean={s['mean']} p5={s['p5']} "
                             f"p50={s['p50']} p95={s['p95']} max={s['max']}")
        if stats["duplicates"]:
            lines.append(f"  duplicates: {stats['duplicates']:,}")
        if stats["examples_over_context"]:
            lines.append(f"  over the {report.token_counts['context_tokens']:,}-token context: "
                         f"{stats['examples_over_context']:,}")
    tokens = report.token_counts
    lines.append(f"tokenizer: {tokens['tokenizer']}" + ("" if tokens["exact"] else " (ESTIMATE)"))
    for key in ("note", "images_note"):
        if tokens.get(key):
            lines.append(f"  note: {tokens[key]}")
    if report.estimate is not None:
        lines.append(report.estimate.describe())
    return lines


def render_report(report, *, color: bool | None = None, max_problems: int = 50) -> str:
    lines = _plain_lines(report, max_problems)
    if not color:
        return "\n".join(lines) + "\n"
    try:
        from rich.console import Console
        from rich.text import Text
    except ImportError:  # pragma: no cover - rich is a dependency; plain text if it is broken
        return "\n".join(lines) + "\n"
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, highlight=False)
    for line in lines:
        style = None
        if line.startswith("USABLE"):
            style = "bold green"
        elif line.startswith("NOT USABLE"):
            style = "bold red"
        elif ": error [" in line:
            style = "red"
        elif ": warning [" in line:
            style = "yellow"
        elif ": note [" in line:
            style = "cyan"
        elif line.startswith("ESTIMATE"):
            style = "cyan"
        console.print(Text(line, style=style or ""), soft_wrap=True)
    return buffer.getvalue()
