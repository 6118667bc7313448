"""``cloudtune validate``: check a dataset before any upload.

Exit 0 when the data is usable (warnings allowed), 2 when it is not.
"""

from __future__ import annotations

import argparse
import sys

EXIT_USABLE = 0
EXIT_NOT_USABLE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="training data, JSONL (one example per line)")
    parser.add_argument("--validation", metavar="FILE", default=None, help="validation data, JSONL")
    from cloudtune.registry import BUILTIN_PROVIDERS, DATASET_CHECK_PROVIDER

    parser.add_argument("--provider", default=DATASET_CHECK_PROVIDER,
                        help=f"{' | '.join(BUILTIN_PROVIDERS)} (default: {DATASET_CHECK_PROVIDER})")
    parser.add_argument("--model", default=None, help="base model, e.g. gpt-4o-mini-2024-07-18")
    parser.add_argument("--method", default="supervised", choices=("supervised", "dpo", "reinforcement"))
    parser.add_argument("--grader", metavar="FILE", default=None,
                        help="reinforcement: the grader (YAML / JSON) whose item.* fields the data must carry")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for the estimate (default: auto rule)")
    parser.add_argument("--tokenizer", default=None, metavar="DIR",
                        help="local Hugging Face tokenizer directory (local models)")
    parser.add_argument("--max-problems", type=int, default=50, help="problems to print (default 50)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")


def _provider_tokenizer(provider: str, model: str | None) -> str | None:
    """Ask the provider (through the registry) for a tokenizer it already has locally."""
    if not model:
        return None
    from cloudtune import errors, registry

    try:
        with registry.get_provider(provider, {"base_model": model}) as instance:
            return instance.tokenizer_path(model)
    except errors.CloudtuneError:
        return None


def run(args: argparse.Namespace) -> int:
    from cloudtune import errors
    from cloudtune.filekind import not_a_regular_file

    from . import validate_file

    for path in (args.file, args.validation):
        problem = None if path is None else not_a_regular_file(path)
        if problem is not None and problem != "does not exist":  # a missing file is the report's own finding
            raise errors.DatasetError(f"{path} {problem}.")
    if args.method == "reinforcement":
        return _run_reinforcement(args)
    report = validate_file(
        args.file,
        provider=args.provider,
        model=args.model,
        method=args.method,
        validation_path=args.validation,
        epochs=getattr(args, "epochs", None),
        tokenizer_path=getattr(args, "tokenizer", None) or _provider_tokenizer(args.provider, args.model),
    )
    out = sys.stdout
    if args.json:
        out.write(report.to_json(indent=2) + "\n")
    else:
        color = bool(getattr(out, "isatty", lambda: False)())
        out.write(report.render(color=color, max_problems=getattr(args, "max_problems", 50)))
    out.flush()
    return EXIT_USABLE if report.ok else EXIT_NOT_USABLE


def _run_reinforcement(args: argparse.Namespace) -> int:
    """RFT data (Azure OpenAI): each example ends with a user message and carries the grader's fields
    (cloudtune.service_facts.azure_rft, also what ``run`` checks before upload)."""
    import json
    from pathlib import Path

    from cloudtune import errors
    from cloudtune.service_facts import azure_rft

    grader = None
    if args.grader:
        import yaml

        text = Path(args.grader).read_text(encoding="utf-8")
        grader = json.loads(text) if args.grader.endswith(".json") else yaml.safe_load(text)
        problems = azure_rft.grader_problems(grader)
        if problems:
            raise errors.ConfigError(f"The grader in {args.grader} would be refused: " + "; ".join(problems))
    found = []
    for path in (args.file, args.validation):
        if path is not None:
            found += [{"file": path, "line": line, "message": message}
                      for line, message in azure_rft.data_problems(Path(path).read_bytes(), grader,
                                                                   limit=getattr(args, "max_problems", 50))]
    if args.json:
        sys.stdout.write(json.dumps({"ok": not found, "method": "reinforcement", "problems": found}, indent=2) + "\n")
    else:
        for problem in found:
            sys.stdout.write(f"error: {problem['file']} line {problem['line']}: {problem['message']}\n")
        sys.stdout.write(("OK: " if not found else "Not usable: ") + f"reinforcement data ({azure_rft.SOURCE})\n")
    return EXIT_USABLE if not found else EXIT_NOT_USABLE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloudtune validate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
