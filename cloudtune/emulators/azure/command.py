"""``cloudtune emulate azure``: run the Azure emulator (an HTTPS proxy) in the foreground.

The Azure SDKs talk to fixed host names, so the emulator is an ``HTTPS_PROXY``
that terminates TLS with a throw-away test CA. Export what it prints (proxy, CA
bundle, the emulated subscription / resource group / project / endpoint and a
client-secret identity, whose secret is a placeholder: the emulator accepts
any) and run cloudtune, ``azure-ai-ml`` or ``openai`` unchanged.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from pathlib import Path

from cloudtune.emulators._http import LOOPBACK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8090, help="proxy port (0 = any free port; default 8090)")
    parser.add_argument("--state-dir", default=None, help="where to write the CA bundle (default: a temp dir)")
    parser.add_argument("--speed", type=float, default=None,
                        help="emulated seconds per real second (default 1, or 1/CLOUDTUNE_TIME_SCALE when set)")
    parser.add_argument("--job-seconds", type=float, default=60.0,
                        help="emulated seconds a fine-tuning job takes, validation to success (default 60)")
    parser.add_argument("--deploy-seconds", type=float, default=10.0,
                        help="emulated seconds a deployment / serverless endpoint takes to create (default 10)")
    parser.add_argument("--delete-seconds", type=float, default=3.0,
                        help="emulated seconds a deployment / endpoint takes to delete (default 3)")
    parser.add_argument("--project", default="ct-project", help="project to export as AZURE_AI_PROJECT "
                        "(seeded: ct-project in eastus2, ct-project-weu in westeurope, ct-workspace not hub-based)")
    parser.add_argument("--max-finetuned-deployments", type=int, default=5)
    parser.add_argument("--quota", type=int, default=500, help="deployment capacity quota per account (default 500)")
    parser.add_argument("--env-file", default=None, help="also write the environment as KEY=VALUE lines here")
    parser.add_argument("--json", action="store_true", help="print the environment as one JSON document")
    parser.add_argument("--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    from cloudtune import timescale
    from cloudtune.emulators._http import EmulatorClock
    from cloudtune.emulators.azure import AzureEmulator, Rules, Timeline

    if args.speed is None:  # the emulated services keep pace with the client's scaled waits
        args.speed = 1 / timescale.time_scale()
    if args.speed <= 0 or args.job_seconds <= 0:
        print("--speed and --job-seconds must be positive.", file=sys.stderr)
        return 2
    timeline = Timeline(validating_s=args.job_seconds * 0.1, queued_s=args.job_seconds * 0.1,
                        running_s=args.job_seconds * 0.8, deploy_s=args.deploy_seconds, delete_s=args.delete_seconds)
    rules = Rules(max_finetuned_deployments=args.max_finetuned_deployments, deployment_capacity_quota=args.quota)
    emulator = AzureEmulator(port=args.port, state_dir=Path(args.state_dir) if args.state_dir else None,
                             clock=EmulatorClock(speed=args.speed), rules=rules, timeline=timeline, verbose=args.verbose)
    env = emulator.env(project=args.project)
    if args.env_file:
        Path(args.env_file).write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    if args.json:
        print(json.dumps({"proxy": emulator.url, "ca_bundle": str(emulator.ca_bundle), "env": env}), flush=True)
    else:
        print(f"Azure emulator (HTTPS proxy) listening on {emulator.url}", flush=True)
        print(f"  CA bundle: {emulator.ca_bundle}", flush=True)
        print("  Export these, then run cloudtune / azure-ai-ml / openai unchanged:", flush=True)
        for key, value in env.items():
            print(f"  export {key}={shlex.quote(value)}", flush=True)
        print(f"  Control: {emulator.url}/_emulator/state (faults: POST {emulator.url}/_emulator/faults)", flush=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        emulator.proxy.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.proxy._server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloudtune emulate azure", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["add_arguments", "run", "main", "LOOPBACK"]
