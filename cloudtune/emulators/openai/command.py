"""``cloudtune emulate openai``: run the OpenAI emulator in the foreground.

Point the SDK (and cloudtune) at it with ``OPENAI_BASE_URL=<printed url>`` and
any ``OPENAI_API_KEY`` (or exactly the one given with ``--api-key``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from cloudtune.emulators._http import LOOPBACK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8089, help="port to listen on (0 = any free port; default 8089)")
    parser.add_argument("--host", default=LOOPBACK,
                        help="address to bind (default 127.0.0.1; anything else needs --allow-remote)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow binding a non-loopback address (the emulator has no real security)")
    parser.add_argument("--speed", type=float, default=None,
                        help="emulated seconds per real second (default 1, or 1/CLOUDTUNE_TIME_SCALE when set)")
    parser.add_argument("--api-key", default=None,
                        help="accept only this bearer key (default: any non-empty key); "
                        "also read from CLOUDTUNE_EMULATOR_API_KEY")
    parser.add_argument("--job-duration", type=float, default=60.0,
                        help="emulated seconds a fine-tuning job takes from creation to success (default 60)")
    parser.add_argument("--min-examples", type=int, default=10, help="smallest training file accepted (default 10)")
    parser.add_argument("--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    from cloudtune.emulators._http import EmulatorClock
    from cloudtune.emulators.openai import EmulatorSettings, OpenAIEmulator, serve

    if args.host not in (LOOPBACK, "localhost", "::1") and not args.allow_remote:
        print(f"Refusing to bind {args.host}: the emulator is for loopback use. Add --allow-remote to insist.",
              file=sys.stderr)
        return 2
    from cloudtune import timescale

    if args.speed is None:  # the emulated services keep pace with the client's scaled waits
        args.speed = 1 / timescale.time_scale()
    if args.speed <= 0 or args.job_duration <= 0:
        print("--speed and --job-duration must be positive.", file=sys.stderr)
        return 2
    settings = EmulatorSettings.for_job_duration(
        args.job_duration,
        api_key=args.api_key or os.environ.get("CLOUDTUNE_EMULATOR_API_KEY") or None,
        min_examples=args.min_examples,
    )
    app = OpenAIEmulator(settings, clock=EmulatorClock(speed=args.speed))
    server = serve(app, host=args.host, port=args.port, verbose=args.verbose)
    host = args.host if ":" not in args.host else f"[{args.host}]"
    print(f"OpenAI emulator listening on http://{host}:{server.port}/v1", flush=True)
    print(f"  export OPENAI_BASE_URL=http://{host}:{server.port}/v1", flush=True)
    print("  export OPENAI_API_KEY=<any non-empty key>" if settings.api_key is None
          else "  export OPENAI_API_KEY=<the key given with --api-key>", flush=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloudtune emulate openai", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
