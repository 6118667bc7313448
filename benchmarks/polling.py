"""Polling cost of following a one-hour OpenAI fine-tuning job: cloudtune's poller vs naive 5 s polling.

An in-process ``cloudtune emulate openai`` runs a job whose timeline lasts one hour
(validation, queue, training steps with metrics, checkpoints, success). The emulator
clock only moves when the follower sleeps, so the hour passes in a few seconds. For
each strategy we count the HTTP requests the emulator actually received and the delay
between each event's creation (its ``created_at``) and the moment it was shown.

Goal: <= 120 requests for the hour, every event shown within 30 s.

Note the floor: showing every event within 30 s means listing events at least every
30 s, i.e. about 3600 / 30 = 120 event requests for the hour before any job fetch, so
the two goals together leave no room for anything else. ``--variants`` measures what
changing the poller's policy data would buy.

    python benchmarks/polling.py [--json] [--steps N] [--hour-seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloudtune import poller  # noqa: E402
from cloudtune.emulators._http import EmulatorClock  # noqa: E402
from cloudtune.emulators.openai import EmulatorSettings, OpenAIEmulator, serve  # noqa: E402
from cloudtune.types import FineTuneSpec, JobEvent  # noqa: E402

KEY_ENV = "CLOUDTUNE_BENCH_OPENAI_KEY"
GOAL_REQUESTS = 120
GOAL_DELAY_S = 30.0


def _training_file(directory: Path) -> Path:
    path = directory / "train.jsonl"
    path.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Question {i}?"},
        {"role": "assistant", "content": f"Answer {i}."},
    ]}) + "\n" for i in range(50)))
    return path


def _scenario(hour_s: float, steps: int, follow: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Start an emulator, create the hour-long job, let ``follow`` watch it; measure."""
    from providers.openai import OpenAIProvider

    clock = EmulatorClock(speed=0.0)  # time moves only when the follower sleeps
    settings = EmulatorSettings(validate_s=hour_s * 0.03, queue_s=hour_s * 0.07, run_s=hour_s * 0.90,
                                file_processing_s=0.0, max_steps=steps, api_key="bench-key")
    app = OpenAIEmulator(settings, clock=clock)
    os.environ[KEY_ENV] = "bench-key"
    with serve(app) as server, tempfile.TemporaryDirectory() as tmp:
        sleep = clock.advance
        provider = OpenAIProvider({"base_url": server.url + "/v1", "api_key_env": KEY_ENV,
                                   "deployments_file": str(Path(tmp) / "d.json")}, sleep=sleep, clock=clock.now)
        training = _training_file(Path(tmp))
        spec = FineTuneSpec(provider="openai", base_model="gpt-4o-mini", training_file=training)
        job = provider.create_job(spec, training_file_id=provider.upload_file(training), validation_file_id=None,
                                  run_id="bench")
        before = len(app.request_log)
        shown: list[tuple[str, float]] = []

        def show(event: JobEvent) -> None:
            shown.append((event.id, clock.now()))

        final = follow(provider, job.id, show, sleep, clock.now)
        log = app.request_log[before:]
        requests = len(log)
        event_requests = sum(line.endswith("/events") for line in log)
        record = app.jobs[job.id]
        total_events = len(record.events)
        # delay from the event's exact emulated creation time (the API rounds created_at to seconds)
        delays = [at - record.exact_times[event_id] for event_id, at in shown]
        seen = [event_id for event_id, _ in shown]
        provider.close()
    return {
        "requests": requests,
        "event_requests": event_requests,
        "job_requests": requests - event_requests,
        "events": total_events,
        "events_shown": len(seen),
        "duplicates": len(seen) - len(set(seen)),
        "max_delay_s": round(max(delays), 1) if delays else None,
        "median_delay_s": round(statistics.median(delays), 1) if delays else None,
        "final_state": str(final),
    }


def follow_with_cloudtune(policy: poller.PollPolicy = poller.DEFAULT_POLICY) -> Callable[..., Any]:
    def follow(provider, job_id, show, sleep, clock) -> Any:  # type: ignore[no-untyped-def]
        return poller.wait_for_job(provider, job_id, on_event=show, sleep=sleep, clock=clock, policy=policy).state

    return follow


# What-if policies (shown with --variants): the same poller with other data in PollPolicy.
VARIANTS = {
    "no ramp while following": poller.PollPolicy(initial_s=30.0),
    "no ramp, job refresh 1 h": poller.PollPolicy(initial_s=30.0, job_refresh_s=3600.0),
    "32 s cap, no ramp, refresh 1 h": poller.PollPolicy(initial_s=32.0, event_latency_s=32.0, job_refresh_s=3600.0),
}


def follow_naively(interval_s: float) -> Callable[..., Any]:
    def follow(provider, job_id, show, sleep, clock) -> Any:  # type: ignore[no-untyped-def]
        cursor = None
        while True:
            for event in provider.list_events(job_id, after=cursor):
                cursor = event.id
                show(event)
            job = provider.get_job(job_id)
            if job.is_terminal:
                for event in provider.list_events(job_id, after=cursor):
                    show(event)
                return job.state
            sleep(interval_s)

    return follow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hour-seconds", type=float, default=3600.0, help="length of the emulated job timeline")
    parser.add_argument("--steps", type=int, default=120, help="training steps (one metrics event each)")
    parser.add_argument("--variants", action="store_true", help="also measure what-if poll policies")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {
        "cloudtune poller": _scenario(args.hour_seconds, args.steps, follow_with_cloudtune()),
        "naive 5 s polling": _scenario(args.hour_seconds, args.steps, follow_naively(5.0)),
    }
    if args.variants:
        for name, policy in VARIANTS.items():
            results[name] = _scenario(args.hour_seconds, args.steps, follow_with_cloudtune(policy))
    ours = results["cloudtune poller"]
    goals = {"requests_ok": ours["requests"] <= GOAL_REQUESTS,
             "delay_ok": ours["max_delay_s"] is not None and ours["max_delay_s"] <= GOAL_DELAY_S}
    if args.json:
        print(json.dumps({"job_seconds": args.hour_seconds, "results": results, "goals": goals}, indent=1))
    else:
        print(f"Following one emulated {args.hour_seconds / 60:g}-minute OpenAI job ({args.steps} training steps)")
        print(f"{'strategy':<32}{'requests':>9}{'(events/job)':>14}{'events':>7}{'shown':>6}{'dupes':>6}"
              f"{'max delay':>10}{'median':>8}")
        for name, row in results.items():
            split = f"({row['event_requests']}/{row['job_requests']})"
            print(f"{name:<32}{row['requests']:>9}{split:>14}{row['events']:>7}{row['events_shown']:>6}"
                  f"{row['duplicates']:>6}{row['max_delay_s']:>9}s{row['median_delay_s']:>7}s")
        print(f"goal: <= {GOAL_REQUESTS} requests: {'met' if goals['requests_ok'] else 'NOT met'}; "
              f"every event within {GOAL_DELAY_S:g} s: {'met' if goals['delay_ok'] else 'NOT met'}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
