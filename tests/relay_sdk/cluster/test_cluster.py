"""signalwire-sdk (unmodified, over wss with the cluster CA) against
`serve --relay-listen` with real agents and a mock-relay cluster. Started by
tests/tests/relay_cluster.rs, which passes RELAY_HOST, SIGNALWIRE_RELAY_CA_FILE,
MOCK_HTTP (the mock's ESL control plane) and RELAY_CONTEXT."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request

import pytest

from signalwire.relay.client import RelayClient, RelayError, _active_clients

HOST = os.environ.get("RELAY_HOST", "")
MOCK = os.environ.get("MOCK_HTTP", "")
# With a real FreeSWITCH (tests/tests/relay_freeswitch.rs) calls are placed
# and digits sent through the controller's REST API instead of the mock's.
REST = os.environ.get("REST_HTTP", "")
TOKEN = os.environ.get("REST_TOKEN", "")
CONTEXT = os.environ.get("RELAY_CONTEXT", "office")
WAV = "/tmp/switchy-relay-test.wav"

if not HOST or not (MOCK or REST):
    pytest.exit("run through `cargo test -p switchy-e2e --test relay_cluster`", returncode=2)


def post(path: str, body, base: str = "") -> dict:
    headers = {"Content-Type": "application/json"}
    if base == REST and TOKEN:
        headers["Authorization"] = f"Bearer {TOKEN}"
    req = urllib.request.Request((base or MOCK) + path, data=json.dumps(body).encode(),
                                 method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def write_wav() -> None:
    """One second of a 440 Hz tone, 8 kHz mono: a file FreeSWITCH can play."""
    import math
    import struct
    import wave
    with wave.open(WAV, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000)))
                               for i in range(8000)))


def place_call() -> str:
    """An inbound call to 4000; returns the far (calling) leg's UUID, if known."""
    if REST:
        r = post("/api/v1/nodes/fs1/originate",
                 {"dest_url": "4000@127.0.0.1:5080", "profile": "external", "app": "park"}, REST)
        return r["uuid"]
    post("/__mock__/inbound_call", {"node": 0, "from": "15551230000", "to": "4000"})
    return ""


def send_dtmf(call_id: str, caller: str, digits: str) -> None:
    """Digits the RELAY leg hears: from its caller (FreeSWITCH), or pushed
    as DTMF events by the mock's timeline."""
    if REST:
        post(f"/api/v1/sessions/{caller}/send_dtmf", {"digits": digits}, REST)
        return
    steps = [{"push": {"node": 0, "event": {"Event-Name": "DTMF", "Unique-ID": call_id,
                                             "DTMF-Digit": d, "DTMF-Duration": "2000"}}}
             for d in digits]
    assert post("/__mock__/scenario_play", {"steps": steps})["status"] == "completed"


async def state(call, want: str, timeout: float = 10):
    if call.state == want:
        return
    await call.wait_for("calling.call.state", lambda e: e.params.get("call_state") == want, timeout)


async def test_a_routed_call_under_sdk_control():
    _active_clients.clear()
    client = RelayClient(project="test_proj", token="test_tok", host=HOST, contexts=[CONTEXT])
    await client.connect()
    calls: asyncio.Queue = asyncio.Queue()

    @client.on_call
    async def _(call):
        await calls.put(call)

    try:
        write_wav()
        # A call arrives at node 0; the route hands it to our context.
        caller = await asyncio.to_thread(place_call)
        call = await asyncio.wait_for(calls.get(), 10)
        assert call.direction == "inbound"
        print("received", call.call_id, "on", call.node_id)

        answered = asyncio.ensure_future(state(call, "answered"))
        await call.answer()
        await answered

        for start in (lambda: call.play_audio(WAV),
                      lambda: call.play_silence(0.2),
                      lambda: call.play_ringtone("us", duration=1)):
            action = await start()
            ev = await action.wait(15)
            assert ev.params["state"] == "finished", ev.params
        # Pause, resume and volume on a play in progress (uuid_fileman).
        paused = asyncio.ensure_future(call.wait_for(
            "calling.call.play", lambda e: e.params.get("state") == "paused", 10))
        action = await call.play_audio(WAV)
        await action.pause()
        await paused
        resumed = asyncio.ensure_future(call.wait_for(
            "calling.call.play", lambda e: e.params.get("state") == "playing", 10))
        await action.resume()
        await resumed
        assert (await action.volume(6.0))["code"] == "200"
        ev = await action.wait(15)
        assert ev.params["state"] == "finished"

        # No TTS engine is configured: a clear 400, not a hang.
        with pytest.raises(RelayError) as e:
            await call.play_tts("hello")
        assert e.value.code == 400 and "tts_engine" in e.value.message

        recording = asyncio.ensure_future(call.wait_for(
            "calling.call.record", lambda e: e.params.get("state") == "recording", 10))
        rec = await call.record({"format": "wav"})
        await recording
        await rec.stop()
        ev = await rec.wait(10)
        assert ev.params["state"] == "finished" and ev.params["url"].startswith("file://"), ev.params

        # Digits: collect three.
        col = await call.collect(digits={"max": 3, "terminators": "#"}, initial_timeout=10)
        await asyncio.to_thread(send_dtmf, call.call_id, caller, "123")
        ev = await col.wait(15)
        assert ev.params["result"]["params"]["digits"] == "123", ev.params

        # The outcome may come right behind the acknowledgement: wait first.
        sent = asyncio.ensure_future(call.wait_for("calling.call.send_digits", None, 10))
        r = await call.send_digits("9#")
        assert r["code"] == "200"
        assert (await sent).params["state"] == "finished"

        # Dial out with a tag: the far end (outside the mock) answers.
        out = await client.dial([[{"type": "phone", "params": {"to_number": "15550001111",
                                                              "from_number": "15551230000"}}]],
                                tag="relay-dial-1", dial_timeout=15)
        assert out.call_id and out.state == "answered", out.state
        print("dialed", out.call_id, "on", out.node_id)

        # A parallel dial: two devices ring, the first to answer wins.
        par = await client.dial([[{"type": "phone", "params": {"to_number": "15550003333",
                                                              "from_number": "15551230000"}},
                                  {"type": "phone", "params": {"to_number": "15550004444",
                                                              "from_number": "15551230000"}}]],
                                tag="relay-dial-2", dial_timeout=15)
        assert par.state == "answered" and par.call_id != out.call_id
        await par.hangup()
        await par.wait_for_ended(10)

        # Connect the inbound call to another device: two legs bridged.
        got = asyncio.ensure_future(call.wait_for(
            "calling.call.connect", lambda e: e.params.get("connect_state") == "connected", 15))
        r = await call.connect([[{"type": "phone", "params": {"to_number": "15550002222",
                                                             "from_number": "15551230000"}}]])
        assert r["code"] == "200"
        peer = (await got).params["peer"]
        assert peer["call_id"] and peer["call_id"] != call.call_id

        await out.hangup()
        await out.wait_for_ended(10)
        await call.hangup()
        ended = await call.wait_for_ended(10)
        assert ended.params["end_reason"] == "hangup", ended.params
    finally:
        await client.disconnect()
        _active_clients.clear()


async def test_an_unknown_call_and_a_bad_device_are_refused_at_once():
    _active_clients.clear()
    client = RelayClient(project="test_proj", token="test_tok", host=HOST, contexts=[CONTEXT])
    await client.connect()
    try:
        with pytest.raises(RelayError) as e:
            await client.execute("calling.answer", {"node_id": "fs1", "call_id": "no-such-call"})
        assert e.value.code == 404
        with pytest.raises(RelayError) as e:
            await client.execute("calling.dial", {"tag": "x", "devices": [[{"type": "phone",
                                                   "params": {"to_number": "12 34"}}]]})
        assert e.value.code == 400
    finally:
        await client.disconnect()
        _active_clients.clear()


async def test_wrong_token_is_refused():
    _active_clients.clear()
    c = RelayClient(project="test_proj", token="wrong", host=HOST)
    with pytest.raises(RelayError) as e:
        await c.connect()
    assert e.value.code == -32401
    await c.disconnect()
    _active_clients.clear()
