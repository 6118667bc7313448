"""The ``cloudtune`` command line. Building the parser imports nothing heavy: every
command's code (and with it pydantic, rich, SDKs, torch) is imported only when
that command runs, so ``cloudtune --help`` starts fast.

Exit codes (one mapping, :func:`cloudtune.errors.exit_code_for`):
0 success; 1 job failed or cancelled; 2 invalid input; 3 authentication or
permission; 4 quota, region or capability; 5 wait timed out while the job is
still running (resume later); 130 interrupted; 141 the reader of our output
closed the pipe (``cloudtune list | head -1``), exited quietly.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

EPILOG = """exit codes:
  0 success                      1 job failed or cancelled
  2 invalid input                3 authentication or permission
  4 quota, region or capability  5 wait timed out, job still running (resume later)
  6 another cloudtune process drives this run (--wait-lock waits)
  130 interrupted                141 output pipe closed by its reader (quiet)

Configuration: CLOUDTUNE_PROVIDER (default provider), CLOUDTUNE_HOME (ledger, local jobs; default ~/.cloudtune),
CLOUDTUNE_STATE (where runs and locks live: sqlite:///PATH, postgresql://..., azblob://ACCOUNT/CONTAINER)."""

# 128 + SIGPIPE, what a shell reports for a program killed by writing to a closed pipe
EXIT_OUTPUT_CLOSED = 141

# command -> (help, "module:function" implementing it, "module" whose add_arguments adds its flags or None)
PLUGGED: dict[str, tuple[str, str]] = {
    "validate": ("check a chat JSONL dataset: errors, warnings, tokens, cost", "cloudtune.dataset.command"),
    "export": ("merge a local run's adapter into its base model and save it", "local_backend.export"),
}
EMULATORS = {
    "openai": "cloudtune.emulators.openai.command",
    "azure": "cloudtune.emulators.azure.command",
}


def _handler(target: str):  # type: ignore[no-untyped-def]
    def call(args: argparse.Namespace) -> int:
        module_name, _, function = target.partition(":")
        return int(getattr(importlib.import_module(module_name), function)(args) or 0)

    return call


def _add_run_flags(p: argparse.ArgumentParser, *, config_positional: bool = True) -> None:
    if config_positional:
        p.add_argument("config", nargs="?", help="YAML run config (flags override it)")
    else:
        # `resume RUN --provider P CONFIG` as the README writes it, or `--config CONFIG`
        p.add_argument("config_file", nargs="?", metavar="CONFIG", help="YAML run config (flags override it)")
        p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--provider", help="openai | azure | local | plugin (default: CLOUDTUNE_PROVIDER or local)")
    p.add_argument("--model", help="base model to fine-tune")
    p.add_argument("--train", help="training data (chat JSONL)")
    p.add_argument("--validation", help="validation data (chat JSONL)")
    p.add_argument("--validation-split", type=float, help="hold out this fraction when no validation file")
    p.add_argument("--method", choices=["supervised", "dpo", "reinforcement"])
    p.add_argument("--grader", metavar="FILE", help="reinforcement: the grader (grader.yaml / grader.json)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate-multiplier", type=float)
    p.add_argument("--suffix")
    p.add_argument("--seed", type=int)
    p.add_argument("--deploy", dest="deploy", action="store_true", default=None, help="deploy and smoke-test (default)")
    p.add_argument("--no-deploy", dest="deploy", action="store_false")
    p.add_argument("--deployment-name")
    p.add_argument("--deployment-sku",
                   help="Azure OpenAI: Standard | GlobalStandard | DeveloperTier | ProvisionedManaged (default: from "
                   "the model and the resource's region)")
    p.add_argument("--max-cost", type=float, metavar="USD",
                   help="refuse (exit 4) before any upload when the estimated training cost is above this")
    p.add_argument("--eval", help="chat JSONL of held-out questions to evaluate the deployment on")
    p.add_argument("--cleanup", choices=["never", "on-failure", "always"])
    p.add_argument("--wait", dest="wait", action="store_true", default=None)
    p.add_argument("--no-wait", dest="wait", action="store_false")
    p.add_argument("--timeout", help="give up waiting after this long (e.g. 90s, 30m, 2h): exit 5, resumable")
    p.add_argument("--cancel-on-interrupt", action="store_true", default=None, help="cancel the remote job on Ctrl-C")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE", help="provider option")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    # several providers (--provider a,b or providers: [...] in the YAML): cloudtune.multirun
    p.add_argument("--like", metavar="RUN", help="repeat a recorded run's spec (data, hyperparameters, eval) on --provider")
    p.add_argument("--max-parallel", type=int, metavar="N", help="several providers: runs driven at once (default 4)")
    p.add_argument("--report", metavar="DIR", help="several providers: write the comparison report here")
    p.add_argument("--baseline", choices=["base"], help="several providers: also compare each run's base model")
    # a run on several providers asks each child this first (cloudtune.multirun): nothing is recorded
    p.add_argument("--preflight-only", action="store_true", help=argparse.SUPPRESS)
    _add_wait_lock(p)


def _duration_not_negative(text: str) -> str:
    """``--wait-lock``'s value: a duration of zero or more (checked here, kept as written)."""
    from cloudtune.config import parse_duration
    from cloudtune.errors import ConfigError

    try:
        seconds = parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    if seconds is None or seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration of zero or more (e.g. 0, 30s, 5m)")
    return text


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are also one JSON document on stdout under ``--json``
    (a script reading stdout gets an answer whatever went wrong); exit 2 either way."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if "--json" in sys.argv[1:]:
            import json

            document = {"error": {"type": "UsageError", "message": f"{self.prog}: {message}", "exit_code": 2}}
            sys.stdout.write(json.dumps(document) + "\n")
            sys.stdout.flush()
        super().error(message)


def _add_wait_lock(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait-lock", metavar="SECONDS", type=_duration_not_negative,
                   help="if another cloudtune process drives this run, wait this long for it (default: exit 6 at once)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cloudtune",
        description="Fine-tune chat models on OpenAI, Azure AI Foundry or a local QLoRA backend.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version="cloudtune 0.1.0")
    parser.add_argument("--state", metavar="URL",
                        help="where runs and run locks live (default: CLOUDTUNE_STATE, else the SQLite ledger in "
                        "CLOUDTUNE_HOME): sqlite:///PATH | postgresql://USER@HOST:PORT/DB | azblob://ACCOUNT/CONTAINER")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, target: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=_handler(target))
        return p

    p = command("run", "validate, upload, fine-tune, deploy, smoke-test, evaluate, clean up", "cloudtune.commands:cmd_run")
    _add_run_flags(p)

    p = command("resume", "continue a run from its last completed step (a paused job is resumed)",
                "cloudtune.commands:cmd_resume")
    p.add_argument("run_id", nargs="?", help="run id (default: the latest run)")
    _add_run_flags(p, config_positional=False)  # a run this ledger never saw is rebuilt from --provider + its spec

    p = command("status", "show a run (the latest by default) and its job's live state", "cloudtune.commands:cmd_status")
    p.add_argument("run_id", nargs="?")
    p.add_argument("--offline", action="store_true", help="ledger only, do not ask the provider")
    _add_run_flags(p, config_positional=False)  # read-only rebuild of a run this ledger never saw

    p = command("watch", "attach to a run's job and follow it to the end", "cloudtune.commands:cmd_watch")
    p.add_argument("run_id", nargs="?")
    p.add_argument("--timeout")
    p.add_argument("--json", action="store_true", help="JSON lines")

    p = command("list", "list runs in the ledger", "cloudtune.commands:cmd_list")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")

    p = command("cancel", "cancel a run's job", "cloudtune.teardown_commands:cmd_cancel")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    _add_wait_lock(p)

    p = command("pause", "pause a run's job where the provider can (resume continues it)", "cloudtune.commands:cmd_pause")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    _add_wait_lock(p)

    p = command("deploy", "deploy a run's fine-tuned model and smoke-test it", "cloudtune.commands:cmd_deploy")
    p.add_argument("run_id")
    p.add_argument("--name", help="deploy under this name (another deployment beside any the run has)")
    p.add_argument("--sku", help="Azure OpenAI: Standard | GlobalStandard | DeveloperTier | ProvisionedManaged")
    p.add_argument("--checkpoint", metavar="ID",
                   help="deploy one of the job's checkpoints instead of the final model (`cloudtune status` lists them)")
    p.add_argument("--json", action="store_true")
    _add_wait_lock(p)

    p = command("undeploy", "delete a run's deployments and wait until they are gone", "cloudtune.teardown_commands:cmd_undeploy")
    p.add_argument("run_id")
    p.add_argument("--name", help="only this deployment of the run's")
    p.add_argument("--json", action="store_true")
    _add_wait_lock(p)

    p = command(
        "delete-model",
        "delete a fine-tuned model: its deployments first (waiting until each is gone), then the model",
        "cloudtune.teardown_commands:cmd_delete_model",
    )
    p.add_argument("model", help="fine-tuned model id, or a run id")
    p.add_argument("--provider")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--include-unmanaged", action="store_true", help="also delete deployments cloudtune did not create")
    p.add_argument("--json", action="store_true")
    _add_wait_lock(p)

    p = command(
        "cleanup",
        "delete everything a run created: deployments, then models, then files",
        "cloudtune.teardown_commands:cmd_cleanup",
    )
    p.add_argument("run_id", nargs="?",
                   help="the run: its exact id or a unique prefix of 8+ characters (default: the latest run)")
    p.add_argument("--older-than", metavar="D",
                   help="instead of one run, every run older than D (e.g. 24h); refused together with a run id")
    p.add_argument("--keep-model", action="store_true", help="delete deployments and files, keep the model")
    p.add_argument("--cancel", action="store_true",
                   help="a job still running is cancelled first (and waited for); without it such runs are refused")
    p.add_argument("--json", action="store_true")
    _add_wait_lock(p)

    p = command("unlock", "break a run's lock whose holder is gone (shows who held it first)",
                "cloudtune.state.command:unlock")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("state", help="where runs and locks live: show it, or migrate it to another backend")
    states = p.add_subparsers(dest="state_command", metavar="ACTION", required=True)
    s = states.add_parser("show", help="backend, schema version, runs and who holds which locks")
    s.set_defaults(handler=_handler("cloudtune.state.command:show"))
    s.add_argument("--json", action="store_true")
    s = states.add_parser("migrate", help="copy every run to another state (e.g. SQLite -> PostgreSQL) and verify")
    s.set_defaults(handler=_handler("cloudtune.state.command:migrate"))
    s.add_argument("--to", required=True, metavar="URL", help="postgresql://... | azblob://ACCOUNT/CONTAINER[/PREFIX]")
    s.add_argument("--json", action="store_true")

    p = command("providers", "each provider: SDK installed, credentials found, preflight", "cloudtune.commands:cmd_providers")
    p.add_argument("names", nargs="*")
    p.add_argument("--json", action="store_true")

    p = command("compare", "compare runs' deployments, base models and few-shot prompting on held-out questions",
                "cloudtune.commands:cmd_compare")
    p.add_argument("run_ids", nargs="+", metavar="RUN")
    p.add_argument("--eval", required=True, metavar="FILE", help="chat JSONL; the last assistant turn is the reference")
    p.add_argument("--baseline", choices=["base"], help="also ask each run's base model on the same provider")
    p.add_argument("--base", dest="baseline", action="store_const", const="base", help=argparse.SUPPRESS)
    p.add_argument("--few-shot", type=int, default=0, metavar="K",
                   help="also ask the base model prompted with K training examples (fixed seed)")
    p.add_argument("--judge", metavar="TARGET",
                   help="pairwise judge: a run id, PROVIDER:DEPLOYMENT or local:MODEL")
    p.add_argument("--report", metavar="DIR", help="write report.md, report.html, charts and examples.jsonl here")
    p.add_argument("--concurrency", type=int, metavar="N", help="requests in flight per target (default per provider)")
    p.add_argument("--limit", type=int, help="only the first N eval examples")
    p.add_argument("--metric", choices=["exact_match", "token_f1", "rouge_l"],
                   help="the metric the verdict ranks on (default token_f1)")
    p.add_argument("--no-cache", action="store_true", help="ask every question again instead of reusing cached answers")
    p.add_argument("--json", action="store_true", help="every figure as one JSON document")

    p = command(
        "quickstart",
        "offline demo: fine-tune SmolLM2-135M-Instruct on CPU, deploy it locally, compare with the base, clean up",
        "cloudtune.quickstart:run",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the model and deployment")

    for name, (help_text, module) in PLUGGED.items():
        p = command(name, help_text, f"{module}:run")
        _add_plugged_arguments(p, module)

    p = sub.add_parser("emulate", help="run a loopback emulator of a cloud API (free dry runs)")
    emulators = p.add_subparsers(dest="emulator", metavar="SERVICE", required=True)
    for name, module in EMULATORS.items():
        e = emulators.add_parser(name, help=f"emulate the {name} fine-tuning API on 127.0.0.1")
        e.set_defaults(handler=_handler(f"{module}:run"))
        _add_plugged_arguments(e, module)
    return parser


def _add_plugged_arguments(parser: argparse.ArgumentParser, module: str) -> None:
    """Plugged commands define their own flags; only imported when that command is used."""
    if _wanted(parser):
        try:
            importlib.import_module(module).add_arguments(parser)
        except ImportError as exc:
            parser.set_defaults(handler=_missing(module, exc))


def _wanted(parser: argparse.ArgumentParser) -> bool:
    words = parser.prog.split()[1:]
    argv = sys.argv[1:]
    return bool(words) and argv[: len(words)] == words


def _missing(module: str, exc: ImportError):  # type: ignore[no-untyped-def]
    def call(args: argparse.Namespace) -> int:
        print(f"cloudtune: this command needs {module}, which could not be imported ({exc}).", file=sys.stderr)
        print("Install everything with: pip install 'cloudtune[all]'", file=sys.stderr)
        return 2

    return call


def main(argv: Sequence[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "config_file") and args.config_file is None and len(extra) == 1 \
            and not extra[0].startswith("-"):
        # argparse hands optional positionals out before the flags between them: the CONFIG of
        # `resume RUN --provider P CONFIG` comes back as an extra argument
        args.config_file, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "config_file", None) is not None:
        if args.config and args.config != args.config_file:
            parser.error(f"the run config is given twice ({args.config_file} and --config {args.config})")
        args.config = args.config_file
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    if getattr(args, "state", None):
        import os

        os.environ["CLOUDTUNE_STATE"] = args.state  # child processes (several providers) use it too
    try:
        return _run(args)
    except BrokenPipeError:  # from reporting an error or an interrupt to a closed pipe
        from cloudtune.output import output_pipe_closed

        if output_pipe_closed():
            return EXIT_OUTPUT_CLOSED
        raise
    finally:
        state = sys.modules.get("cloudtune.state")
        if state is not None:
            state.close_states()  # releases this command's locks (a PostgreSQL session, a blob lease)


def _run(args: argparse.Namespace) -> int:
    from cloudtune.errors import CloudtuneError, exit_code_for

    try:
        code = args.handler(args)
        sys.stdout.flush()  # here, not at interpreter exit, so a closed pipe is caught below
        return code
    except CloudtuneError as exc:
        _report_error(args, exc)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("cloudtune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug of ours: say so plainly, keep the details on demand
        import os
        import traceback

        from cloudtune.output import output_pipe_closed
        from cloudtune.secrets import scrub

        if isinstance(exc, BrokenPipeError) and output_pipe_closed():
            return EXIT_OUTPUT_CLOSED  # the reader went away (`cloudtune list | head -1`): nothing to say
        if os.environ.get("CLOUDTUNE_DEBUG"):
            traceback.print_exc()
        print(scrub(f"cloudtune: internal error: {type(exc).__name__}: {exc}"), file=sys.stderr)
        # only commands about a run have run_id (`run` sets it once the run exists): no run, no resume hint
        resume = f" The ledger is intact: `cloudtune resume {args.run_id or 'RUN'}` continues." \
            if hasattr(args, "run_id") else ""
        print(f"hint: this is a cloudtune bug; CLOUDTUNE_DEBUG=1 shows the traceback.{resume}", file=sys.stderr)
        return 1


def _report_error(args: argparse.Namespace, exc: BaseException) -> None:
    from cloudtune.output import emit_json, say

    if getattr(args, "json", False):
        try:
            emit_json({"error": exc.to_dict()})  # type: ignore[attr-defined]
        except BrokenPipeError:
            from cloudtune.output import output_pipe_closed

            if not output_pipe_closed():
                raise  # the error still goes to stderr below, and keeps its exit code
    say(f"cloudtune: error: {exc}", sys.stderr)
    hint = getattr(exc, "hint", None)
    if hint:
        say(f"hint: {hint}", sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
