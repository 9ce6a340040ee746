#!/usr/bin/env python3
"""Peer benchmark: genesis (asyncio Python ESL library) decoding the same captures.

Drives genesis (PyPI, pinned in requirements-genesis.txt) unmodified:
``genesis.protocol.Protocol.handler`` is the library's receive loop. It reads
an ``asyncio.StreamReader`` with ``readline()`` until a header block ends in a
blank line (``_read_header_block``), hands it to
``ESLReaderFSM.process_headers`` (``parse_headers``: split on ``": "``,
``urllib.parse.unquote`` of every key and value, duplicates kept as lists),
reads ``Content-Length`` bytes with ``readexactly`` and hands them to
``ESLReaderFSM.process_body`` (plain event bodies parsed again with
``parse_headers``, an inner body split off after the blank line), then puts
every ``ESLEvent`` on the protocol's ``asyncio.Queue``. Here the reader is a
``StreamReader`` fed the whole capture and then EOF instead of a TCP
connection; nothing of the library is replaced. The consumer side
(telemetry, processors, handler dispatch) is not run: it is routing, not
decoding.

Usage: python benches/peers/python_esl_peer_genesis.py [--seconds S] FILE...

Prints one JSON line per file. A file the library cannot decode gets a line
with an "error" field instead of rates, and the exit status is 1.
"""

import argparse
import asyncio
import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

from genesis.protocol import Protocol

PARSER = f"genesis {version('genesis')}"

NOTES = {
    "text/event-json": (
        "genesis frames text/event-json but does not parse the JSON: each "
        "event keeps only the outer Content-Length/Content-Type headers and "
        "the JSON text as its str body (no json.loads)"),
    "text/event-xml": (
        "genesis frames text/event-xml but does not parse the XML: each "
        "event keeps only the outer Content-Length/Content-Type headers and "
        "the XML text as its str body"),
}


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


async def one_pass(data: bytes) -> Protocol:
    """The library's whole receive path over one capture."""
    proto = Protocol()
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    proto.reader = reader
    proto.is_connected = True  # what Protocol.start() sets before handler()
    await proto.handler()  # runs until EOF of the capture
    return proto


def drained(proto: Protocol):
    """Messages the library queued for its consumer; None marks reader EOF."""
    out = []
    while not proto.events.empty():
        out.append(proto.events.get_nowait())
    assert out and out[-1] is None, "reader did not reach EOF of the capture"
    assert proto._pending_loss_reason == "eof", proto._pending_loss_reason
    return out[:-1]


async def bench(path: Path, seconds: float) -> dict:
    data = path.read_bytes()
    want_frames, want_events, want_bytes = expected_counts(path)
    assert want_bytes == len(data), f"{path}: transcript covers {want_bytes} of {len(data)} bytes"
    out = {"parser": PARSER, "file": path.name, "bytes": len(data)}

    # Untimed check pass: the library must decode every frame and event.
    try:
        msgs = drained(await one_pass(data))
    except Exception as exc:  # library gave up: report it, do not time it
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    assert len(msgs) == want_frames > 0, (path, len(msgs), want_frames)
    events = [m for m in msgs if m.get("Content-Type", "").startswith("text/event-")]
    # Events may be 0 only where the transcript lists none (reply-only files).
    assert len(events) == want_events, (path, len(events), want_events)
    notes = []
    for e in events:
        ctype = e["Content-Type"]
        if ctype == "text/event-plain":
            assert "Event-Name" in e, path
        else:  # json/xml: only framed, the body stays a string
            assert "Event-Name" not in e and e.body, (path, ctype)
            note = NOTES.get(ctype, f"{ctype}: body kept as a string")
            if note not in notes:
                notes.append(note)

    # Timed passes: whole capture each time, until at least `seconds` elapsed.
    passes, elapsed = 0, 0.0
    while elapsed < seconds:
        start = time.perf_counter()
        proto = await one_pass(data)
        elapsed += time.perf_counter() - start
        passes += 1
        assert proto.events.qsize() == want_frames + 1  # + the EOF marker

    out.update(
        frames_per_pass=want_frames,
        events_per_pass=want_events,
        passes=passes,
        seconds=round(elapsed, 3),
        mb_per_s=round(len(data) * passes / elapsed / 1e6, 3),
        events_per_s=round(want_events * passes / elapsed, 1),
    )
    if notes:
        out["note"] = "; ".join(notes)
    return out


async def amain(args) -> int:
    status = 0
    for path in args.files:
        result = await bench(path, args.seconds)
        status |= "error" in result
        print(json.dumps(result), flush=True)
    return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="minimum timed seconds per file (default 3)")
    ap.add_argument("files", nargs="+", type=Path, help="ESL capture .bin files")
    args = ap.parse_args()
    return asyncio.run(amain(args))  # stock asyncio loop (uvloop not installed as policy)


if __name__ == "__main__":
    sys.exit(main())
