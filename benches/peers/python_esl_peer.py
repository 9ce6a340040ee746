#!/usr/bin/env python3
"""Peer benchmark: a published Python ESL parser decoding the same captures.

Drives greenswitch (PyPI, pinned in requirements.txt) unmodified:
``greenswitch.esl.ESLProtocol.receive_events`` reads a connection line by
line, builds an ``ESLEvent`` per header block (url-unquote + split into a
dict), and ``handle_event`` reads each Content-Length body and, for events,
parses it with ``ESLEvent.parse_data``. Here the socket file is an
``io.BytesIO`` over a capture instead of a gevent socket; nothing else of the
library is replaced.

Usage: python3 benches/peers/python_esl_peer.py [--seconds S] FILE...

Prints one JSON line per file. A file the library cannot decode gets a line
with an "error" field instead of rates, and the exit status is 1.
"""

import argparse
import io
import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

from greenswitch.esl import ESLProtocol

PARSER = f"greenswitch {version('greenswitch')}"


class _Reply:
    """Stands in for the gevent AsyncResult a sent command waits on."""

    __slots__ = ()

    def set(self, event):
        pass


class _PendingCommands:
    """Stands in for ``_commands_sent``: every reply finds a waiting command
    (the captures hold the replies to commands we are not actually sending)."""

    __slots__ = ()
    _reply = _Reply()

    def pop(self, index=0):
        return self._reply


class CaptureESL(ESLProtocol):
    """greenswitch's protocol reading from an in-memory capture.

    The only override wraps ``handle_event`` to count frames; parsing stays in
    the library's ``receive_events`` / ``handle_event`` / ``ESLEvent``.
    """

    def __init__(self, data: bytes):
        super().__init__()
        self.sock_file = io.BytesIO(data)  # receive_events/_read_socket read this
        self.sock = self.sock_file  # only .close() is called, on a read error
        self._commands_sent = _PendingCommands()
        self.connected = True
        self.frames = 0
        self.last_type = None

    def handle_event(self, event):
        self.frames += 1
        self.last_type = event.headers.get("Content-Type")
        super().handle_event(event)

    def events(self):
        """Decoded events the library queued for its handlers (text/event-*)."""
        return [
            e for e in self._esl_event_queue.queue
            if e.headers.get("Content-Type", "").startswith("text/event-")
        ]


def expected_counts(bin_path: Path):
    """(frames, events, bytes) listed by NAME.transcript.txt beside NAME.bin."""
    transcript = bin_path.with_name(bin_path.stem + ".transcript.txt")
    frames = events = length = 0
    for line in transcript.read_text().splitlines():
        if line.startswith("RECV "):
            _, _, size, ctype = line.split(maxsplit=4)[:4]
            frames += 1
            events += ctype.startswith("text/event-")
            length += int(size.removeprefix("len="))
    return frames, events, length


def one_pass(data: bytes) -> CaptureESL:
    proto = CaptureESL(data)
    proto.receive_events()  # runs until EOF of the capture
    return proto


def bench(path: Path, seconds: float) -> dict:
    data = path.read_bytes()
    want_frames, want_events, want_bytes = expected_counts(path)
    assert want_bytes == len(data), f"{path}: transcript covers {want_bytes} of {len(data)} bytes"
    out = {"parser": PARSER, "file": path.name, "bytes": len(data)}

    # Untimed check pass: the library must decode every frame and event.
    proto = CaptureESL(data)
    try:
        proto.receive_events()
    except Exception as exc:  # library gave up: report it, do not time it
        out["error"] = (f"{type(exc).__name__}: {exc} (library raised on frame "
                        f"{proto.frames} of {want_frames}, {proto.last_type})")
        return out
    events = proto.events()
    assert proto.frames == want_frames > 0, (path, proto.frames, want_frames)
    # Events may be 0 only where the transcript lists none (reply-only files).
    assert len(events) == want_events, (path, len(events), want_events)
    assert all("Event-Name" in e.headers for e in events), path

    # Timed passes: whole capture each time, until at least `seconds` elapsed.
    passes, elapsed = 0, 0.0
    while elapsed < seconds:
        start = time.perf_counter()
        proto = one_pass(data)
        elapsed += time.perf_counter() - start
        passes += 1
        assert proto.frames == want_frames

    out.update(
        frames_per_pass=want_frames,
        events_per_pass=want_events,
        passes=passes,
        seconds=round(elapsed, 3),
        mb_per_s=round(len(data) * passes / elapsed / 1e6, 3),
        events_per_s=round(want_events * passes / elapsed, 1),
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="minimum timed seconds per file (default 3)")
    ap.add_argument("files", nargs="+", type=Path, help="ESL capture .bin files")
    args = ap.parse_args()
    status = 0
    for path in args.files:
        result = bench(path, args.seconds)
        status |= "error" in result
        print(json.dumps(result), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
