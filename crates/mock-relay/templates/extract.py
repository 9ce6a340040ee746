#!/usr/bin/env python3
"""Extracts mock-relay's event templates from real FreeSWITCH captures.

    python3 crates/mock-relay/templates/extract.py ../shared/fixtures/esl > crates/mock-relay/templates/events.tmpl

For every event in the plain and json session captures it writes the header
list in FreeSWITCH's order, values in FreeSWITCH's plain (percent) encoding,
with the values that differ per node, per channel and per moment replaced by
`${name}` placeholders (`{` and `}` are always percent-encoded by
FreeSWITCH, so a literal `${` cannot occur in a value). One template per
(event name, direction, channel state); the first occurrence wins, except
that a second event of the same key with another header set (the two CODEC
events: read codec, then write codec) is kept as state `<state>#2`.
"""
import json
import sys
import urllib.parse
from pathlib import Path

BY_NAME = {
    "Core-UUID": "core_uuid", "FreeSWITCH-Hostname": "hostname",
    "FreeSWITCH-Switchname": "hostname", "FreeSWITCH-IPv4": "ipv4",
    "Event-Date-Local": "date_local", "Event-Date-GMT": "date_gmt",
    "Event-Date-Timestamp": "ts", "Event-Sequence": "seq",
    "Channel-State": "state", "Channel-State-Number": "state_number",
    "Channel-Call-State": "call_state", "Answer-State": "answer_state",
    "Hangup-Cause": "hangup_cause", "Original-Channel-Call-State": "orig_call_state",
    "Channel-Call-State-Number": "call_state_number",
    "Unique-ID": "uuid", "Caller-Unique-ID": "uuid", "Channel-Call-UUID": "uuid",
    "variable_uuid": "uuid", "variable_call_uuid": "uuid",
    "Call-Direction": "direction", "Caller-Direction": "direction",
    "Caller-Logical-Direction": "direction", "Presence-Call-Direction": "direction",
    "variable_direction": "direction",
    "Channel-Name": "channel_name", "Caller-Channel-Name": "channel_name",
    "variable_channel_name": "channel_name",
    "Caller-Destination-Number": "dest", "variable_destination_number": "dest",
    "variable_sip_req_user": "dest", "variable_sip_to_user": "dest",
    "Caller-Caller-ID-Name": "cid_name", "Caller-Orig-Caller-ID-Name": "cid_name",
    "Caller-Caller-ID-Number": "cid_num", "Caller-Orig-Caller-ID-Number": "cid_num",
    "Caller-ANI": "cid_num", "variable_sip_from_user": "cid_num",
    "variable_caller_id_name": "cid_name", "variable_caller_id_number": "cid_num",
    "Caller-Context": "context", "Caller-Network-Addr": "network_addr",
    "Caller-Profile-Created-Time": "created_us", "Caller-Channel-Created-Time": "created_us",
    "Caller-Channel-Answered-Time": "answered_us",
    "Caller-Channel-Progress-Time": "progress_us",
    "Caller-Channel-Progress-Media-Time": "progress_media_us",
    "Caller-Channel-Hangup-Time": "hangup_us",
    "Caller-Channel-Bridged-Time": "bridged_us",
    "Application": "app", "Application-Data": "app_data",
    "Application-UUID": "app_uuid", "Application-Response": "app_response",
    "Job-UUID": "job_uuid", "Job-Command": "job_command", "Job-Command-Arg": "job_arg",
    "API-Command": "api_command", "API-Command-Argument": "api_arg",
    "variable_sip_call_id": "sip_call_id", "variable_sip_req_uri": "req_uri",
    "variable_sofia_profile_name": "profile",
    "variable_hangup_cause": "hangup_cause", "variable_hangup_cause_q850": "hangup_q850",
    "variable_current_application": "last_app",
    "variable_current_application_data": "last_app_data",
}


def fs_encode(v: str) -> str:
    out = []
    for b in v.encode():
        c = chr(b)
        if b < 0x20 or b > 0x7E or c in ' "#%&+:;<=>?@[\\]^`{|}':
            out.append("%%%02X" % b)
        else:
            out.append(c)
    return "".join(out)


def frames(data: bytes):
    i = 0
    while i < len(data):
        j = data.index(b"\n\n", i)
        h = dict(l.split(": ", 1) for l in data[i:j].decode().split("\n") if l)
        i = j + 2
        body = b""
        if "Content-Length" in h:
            n = int(h["Content-Length"])
            body, i = data[i:i + n], i + n
        yield h, body


def plain_events(path: Path):
    for h, body in frames(path.read_bytes()):
        if h.get("Content-Type") == "text/event-plain":
            head, _, _ = body.partition(b"\n\n")
            pairs = [l.split(": ", 1) for l in head.decode().split("\n")]
            yield [(k, urllib.parse.unquote(v)) for k, v in pairs if k != "Content-Length"]


def events(fixtures: Path):
    yield from plain_events(fixtures / "esl-session-plain.bin")
    # Legs hung up before answer carry other variables: keep those as the
    # `!noanswer` variant of the hangup events.
    for ev in plain_events(fixtures / "api-uuid-kill-existing.bin"):
        d = dict(ev)
        if d["Event-Name"] in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY"):
            yield [(k, v) if k != "Channel-State" else (k, v) for k, v in ev] + [("__variant__", "!noanswer")]
    for h, body in frames((fixtures / "esl-session-json.bin").read_bytes()):
        if h.get("Content-Type") == "text/event-json":
            obj = json.loads(body, object_pairs_hook=list)
            pairs = [(k, v if isinstance(v, str) else "ARRAY::" + "|:".join(v)) for k, v in obj]
            yield [(k, v) for k, v in pairs if k not in ("Content-Length", "_body")]


def main():
    fixtures = Path(sys.argv[1])
    seen = {}
    uuids = {}
    out = ["# Generated by extract.py from shared/fixtures/esl session captures; do not edit by hand.",
           "# == EVENT-NAME DIRECTION CHANNEL-STATE, then Name: value lines (FreeSWITCH plain encoding)."]
    for ev in events(fixtures):
        d = dict(ev)
        variant = d.pop("__variant__", "")
        ev = [(k, v) for k, v in ev if k != "__variant__"]
        name, direction, state = d["Event-Name"], d.get("Call-Direction", "-"), d.get("Channel-State", "-") + variant
        key = (name, direction, state)
        names = tuple(k for k, _ in ev)
        if key in seen:
            if seen[key] == names or (name, direction, state + "#2") in seen:
                continue
            key = (name, direction, state + "#2")
            state = state + "#2"
        seen[key] = names
        own = d.get("Unique-ID")
        if own:
            uuids[direction] = own
        out.append(f"== {name} {direction} {state}")
        for k, v in ev:
            if k in BY_NAME:
                enc = "${" + BY_NAME[k] + "}"
            elif own and v == own:
                enc = "${uuid}"
            elif own and v in uuids.values():
                enc = "${peer_uuid}"
            else:
                enc = fs_encode(v) if v else "_undef_"
            out.append(f"{k}: {enc}")
        out.append("")
    print("\n".join(out))


main()
