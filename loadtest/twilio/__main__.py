"""Command line for the Twilio load caller.

Example::

    python -m loadtest.twilio --url http://127.0.0.1:8080 \\
        --account-sid AC... --auth-token ... --to +15550100000 \\
        --calls 50 --concurrency 50 --ramp 5 --audio book_appointment,goodbye \\
        --json out.json

The auth token can come from ``TWILIO_AUTH_TOKEN`` instead of the command line
(so it does not show in the process list); it is never printed.
Exit status: 0 when every call completed (or was answered without a stream,
e.g. busy), 1 when any call failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from loadtest.audio import AudioFixtureError
from loadtest.twilio_caller import CallerConfig, Outcome, Summary, render_summary, run_calls

_OK = {Outcome.COMPLETED.value, Outcome.NO_STREAM.value}
# Beyond this the load caller's own frames are late enough to distort the
# server-side numbers it reports.
_CALLER_LATE_MS = 20.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.twilio",
        description="Simulate inbound Twilio calls (signed webhook, Media Streams) on voxgate.",
    )
    p.add_argument("--url", required=True, help="where the server listens, http://HOST:PORT")
    p.add_argument("--public-url", help="base URL the server is configured with (signatures)")
    p.add_argument("--webhook-path", default="/twilio/webhook")
    p.add_argument("--account-sid", required=True)
    p.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"))
    p.add_argument("--to", default="+15550100000", help="the called number")
    p.add_argument("--from", dest="from_number", default="+15550109999")
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=None, help="default: --calls")
    p.add_argument("--ramp", type=float, default=0.0, help="spread call starts over S seconds")
    p.add_argument("--audio", default="book_appointment", help="NAME[,NAME]: round-robin per call")
    p.add_argument("--sequence", action="store_true", help="each call plays all --audio in order")
    p.add_argument("--gap", type=float, default=3.0, help="silence between sequence parts")
    p.add_argument("--audio-dir", help="fixture directory (default: tests/data/audio)")
    p.add_argument("--silence-before", type=float, default=0.5)
    p.add_argument("--silence-after", type=float, default=3.0)
    p.add_argument("--duration", type=float, help="exact call length in seconds")
    p.add_argument(
        "--wait-greeting", action="store_true", help="stay silent until the greeting has played"
    )
    p.add_argument("--greeting-timeout", type=float, default=15.0)
    p.add_argument("--dtmf", default="", help="digits to send as dtmf events")
    p.add_argument("--dtmf-at", type=float, help="when to start the digits (s into the call)")
    p.add_argument("--prebuffer", type=float, default=0.04, help="playout jitter buffer (s)")
    p.add_argument("--gap-max", type=float, default=0.5)
    p.add_argument("--silence-dbfs", type=float, default=-50.0)
    p.add_argument("--barge-in-timeout", type=float, default=1.5)
    p.add_argument("--http-timeout", type=float, default=10.0)
    p.add_argument("--max-call", type=float, help="per-call limit (default: audio + 30 s)")
    p.add_argument("--deadline", type=float, help="whole-run limit in seconds")
    p.add_argument("--json", dest="json_path", help="write the summary as JSON here")
    p.add_argument("--record-dir", help="write caller/agent WAVs per call here")
    p.add_argument("--quiet", action="store_true", help="no table on stdout")
    return p


def config_from_args(args: argparse.Namespace) -> CallerConfig:
    if not args.auth_token:
        raise ValueError("--auth-token (or TWILIO_AUTH_TOKEN) is required")
    names = tuple(n.strip() for n in args.audio.split(",") if n.strip())
    if not names:
        raise ValueError("--audio needs at least one name")
    if args.calls < 1:
        raise ValueError("--calls must be at least 1")
    concurrency = args.concurrency if args.concurrency is not None else args.calls
    if concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    return CallerConfig(
        url=args.url,
        public_url=args.public_url,
        webhook_path=args.webhook_path,
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        to=args.to,
        from_number=args.from_number,
        calls=args.calls,
        concurrency=concurrency,
        ramp_s=args.ramp,
        audio=names,
        sequence=args.sequence,
        gap_s=args.gap,
        audio_dir=args.audio_dir,
        silence_before_s=args.silence_before,
        silence_after_s=args.silence_after,
        duration_s=args.duration,
        wait_for_greeting=args.wait_greeting,
        greeting_timeout_s=args.greeting_timeout,
        dtmf=args.dtmf,
        dtmf_at_s=args.dtmf_at,
        prebuffer_s=args.prebuffer,
        gap_max_s=args.gap_max,
        silence_dbfs=args.silence_dbfs,
        barge_in_timeout_s=args.barge_in_timeout,
        http_timeout_s=args.http_timeout,
        max_call_s=args.max_call,
        deadline_s=args.deadline,
        record_dir=args.record_dir,
    )


def _run(config: CallerConfig) -> Summary:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_calls(config))
    return uvloop.run(run_calls(config))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2
    try:
        summary = _run(config)
    except (AudioFixtureError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        from rich.console import Console

        console = Console()
        console.print(render_summary(summary))
        for error in summary.errors[:5]:
            console.print(f"[red]error:[/red] {error}", highlight=False)
        late = summary.send_lateness_ms.p99
        if late is not None and late > _CALLER_LATE_MS:
            console.print(
                f"[yellow]warning:[/yellow] the caller itself ran late (p99 {late:.0f} ms): "
                "it is short of CPU, so jitter/gap numbers describe it, not the server"
            )
    if args.json_path:
        Path(args.json_path).write_bytes(msgspec.json.format(msgspec.json.encode(summary)))
    failed = sum(n for outcome, n in summary.outcomes.items() if outcome not in _OK)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
