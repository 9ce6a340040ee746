#!/usr/bin/env python3
"""greenswitch 0.0.19 (PyPI, unmodified) in its normal use against one ESL
server: connect and authenticate, subscribe events, api and bgapi commands,
a self-call originated, answered over ESL and hung up. Prints what it saw
as one JSON line; the same run against real FreeSWITCH and mock-relay
should print the same.

    pip install -r benches/peers/requirements.txt
    python3 benches/peers/greenswitch_normal_use.py HOST PORT [SELF_SIP]
"""
import json, sys, time, uuid
import gevent
from greenswitch.esl import InboundESL

host, port = sys.argv[1], int(sys.argv[2])
self_sip = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1:5080"
seen = []
parked = {}

def on_event(e):
    name = e.headers.get("Event-Name")
    seen.append(name)
    if name == "CHANNEL_PARK" and e.headers.get("Call-Direction") == "inbound":
        parked["b"] = e.headers.get("Unique-ID")

esl = InboundESL(host=host, port=port, password="ClueCon")
esl.connect()
for n in ("CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_PARK", "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB"):
    esl.register_handle(n, on_event)
out = {}
out["events"] = esl.send("events plain CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_PARK CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB").headers.get("Reply-Text")
out["status"] = esl.send("api status").data.splitlines()[1] if esl.send("api status").data else None
out["uuid_exists"] = esl.send("api uuid_exists 00000000-0000-0000-0000-000000000000").data
a = str(uuid.uuid4())
r = esl.send(f"bgapi originate {{origination_uuid={a}}}sofia/external/doggy@{self_sip} &park()")
out["bgapi"] = r.headers.get("Reply-Text", "").split(":")[0]
for _ in range(100):
    if "b" in parked:
        break
    gevent.sleep(0.05)
out["answer"] = esl.send(f"api uuid_answer {parked.get('b')}").data.strip()
gevent.sleep(0.5)
out["kill"] = esl.send(f"api uuid_kill {a}").data.strip()
for _ in range(100):
    if seen.count("CHANNEL_HANGUP_COMPLETE") >= 2:
        break
    gevent.sleep(0.05)
out["seen"] = {n: seen.count(n) for n in sorted(set(seen))}
esl.stop()
print(json.dumps(out, sort_keys=True))
