"""signalwire-sdk's real RelayClient and Call against mock-relay --relay,
over wss (trusting the test CA through SIGNALWIRE_RELAY_CA_FILE, the SDK
untouched) and over ws (the SDK hard-wires wss://, so for ws the test points
websockets.connect at ws://, as SignalWire's own mock harness does)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import patch

import pytest
import websockets

from signalwire.relay.client import RelayClient, RelayError, _active_clients

PROJECT, TOKEN = "test_proj", "test_tok"


@contextlib.asynccontextmanager
async def client_on(mock, transport: str, **kw):
    _active_clients.clear()
    real_connect = websockets.connect
    if transport == "ws":
        redirect = patch(
            "signalwire.relay.client.websockets.connect",
            side_effect=lambda uri, *a, **k: real_connect(mock.ws_url, *a, **{**k, "ssl": None}),
        )
    else:
        redirect = contextlib.nullcontext()
    with redirect:
        c = RelayClient(project=kw.pop("project", PROJECT), token=kw.pop("token", TOKEN),
                        host=mock.host, contexts=kw.pop("contexts", ["default"]), **kw)
        await c.connect()
        try:
            yield c
        finally:
            await c.disconnect()
            _active_clients.clear()


def mock_for(request, transport):
    return request.getfixturevalue("mock_wss" if transport == "wss" else "mock_ws")


async def bg(fn, *a, **kw):
    return await asyncio.to_thread(fn, *a, **kw)


async def test_wss_connect_trusts_the_ca_file_and_the_session_is_listed(mock_wss, ca_file):
    mock_wss.reset()
    async with client_on(mock_wss, "wss") as c:
        assert c.relay_protocol.startswith("signalwire_")
        s = [x for x in mock_wss.sessions() if x["protocol_string"] == c.relay_protocol]
        assert len(s) == 1 and s[0]["contexts"] == ["default"], mock_wss.sessions()
        assert s[0]["id"] == c._session_id  # sessionid scopes a test to its session
        connect = mock_wss.received("signalwire.connect")[-1]["frame"]
        assert connect["params"]["authentication"] == {"project": PROJECT, "token": TOKEN}
    assert mock_wss.get("/__mock__/health")["ws_scheme"] == "wss"


async def test_wss_with_another_ca_fails_verification(mock_wss, monkeypatch):
    other = Path(os.environ["RELAY_TLS_DIR"]) / "other-ca.pem"
    monkeypatch.setenv("SIGNALWIRE_RELAY_CA_FILE", str(other))
    _active_clients.clear()
    c = RelayClient(project=PROJECT, token=TOKEN, host=mock_wss.host)
    with pytest.raises(Exception) as e:
        await c.connect()
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value), e.value
    await c.disconnect()
    _active_clients.clear()
    # The mock counted the failed handshake and lived on.
    assert mock_wss.get("/__mock__/health")["handshake_failures"] >= 1


@pytest.mark.parametrize("transport", ["wss", "ws"])
async def test_inbound_call_the_whole_way(request, transport, ca_file):
    mock = mock_for(request, transport)
    mock.reset()
    calls: asyncio.Queue = asyncio.Queue()
    async with client_on(mock, transport) as c:
        @c.on_call
        async def _(call):
            await calls.put(call)

        call_id = f"in-{transport}-1"
        r = await bg(mock.post, "/__mock__/inbound_call",
                     {"call_id": call_id, "from_number": "+15551230000",
                      "to_number": "+15559870000", "auto_states": ["created", "ringing"]},
                     session_id=c._session_id)
        assert r["count"] == 1 and r["states_emitted"] == ["created", "ringing"]
        call = await asyncio.wait_for(calls.get(), 5)
        assert call.call_id == call_id and call.direction == "inbound"

        # answer: the scripted state event follows the acknowledgement.
        mock.arm("calling.answer", [{"event_type": "calling.call.state",
                                     "emit": {"call_state": "answered", "direction": "inbound"}}])
        assert (await call.answer())["code"] == "200"
        await call.wait_for("calling.call.state", lambda e: e.params.get("call_state") == "answered", 5)
        assert call.state == "answered"

        # play: audio, tts, silence, ringtone, each playing then finished.
        for start, kind in [
            (lambda: call.play_audio("https://example.invalid/a.wav"), "audio"),
            (lambda: call.play_tts("hello from switchy"), "tts"),
            (lambda: call.play_silence(0.5), "silence"),
            (lambda: call.play_ringtone("us", duration=1.0), "ringtone"),
        ]:
            mock.arm("calling.play", [{"emit": {"state": "playing"}},
                                      {"emit": {"state": "finished"}, "delay_ms": 20}])
            action = await start()
            ev = await action.wait(5)
            assert ev.params["state"] == "finished" and ev.params["control_id"] == action.control_id
            sent = mock.received("calling.play")[-1]["frame"]["params"]
            assert sent["play"][0]["type"] == kind and sent["call_id"] == call_id

        # record
        mock.arm("calling.record", [
            {"emit": {"state": "recording"}},
            {"emit": {"state": "finished", "record": {"url": "https://example.invalid/r.wav",
                                                       "duration": 1.5, "size": 24000}}}])
        rec = await call.record({"format": "wav", "beep": True})
        ev = await rec.wait(5)
        assert ev.params["state"] == "finished" and ev.params["record"]["size"] == 24000

        # collect digits
        mock.arm("calling.collect", [{"emit": {"result": {
            "type": "digit", "params": {"digits": "1234", "terminator": "#"}}}}])
        col = await call.collect(digits={"max": 4, "terminators": "#"}, initial_timeout=5)
        ev = await col.wait(5)
        assert ev.params["result"]["params"]["digits"] == "1234"

        # play and collect
        mock.arm("calling.play_and_collect", [
            {"event_type": "calling.call.collect",
             "emit": {"result": {"type": "digit", "params": {"digits": "9", "terminator": ""}}}}])
        pc = await call.play_and_collect([{"type": "tts", "params": {"text": "press 9"}}],
                                         {"digits": {"max": 1}})
        ev = await pc.wait(5)
        assert ev.params["result"]["params"]["digits"] == "9"

        # send digits
        mock.arm("calling.send_digits", [{"emit": {"state": "finished"}}])
        got = asyncio.ensure_future(call.wait_for("calling.call.send_digits", None, 5))
        assert (await call.send_digits("12#"))["code"] == "200"
        assert (await got).params["state"] == "finished"
        assert mock.received("calling.send_digits")[-1]["frame"]["params"]["digits"] == "12#"

        # connect, then disconnect
        mock.arm("calling.connect", [
            {"emit": {"connect_state": "connecting"}},
            {"emit": {"connect_state": "connected",
                      "peer": {"call_id": "peer-1", "node_id": "mock-relay-node-1"}}}])
        got = asyncio.ensure_future(call.wait_for(
            "calling.call.connect", lambda e: e.params.get("connect_state") == "connected", 5))
        r = await call.connect([[{"type": "phone", "params": {"to_number": "+15550001111",
                                                             "from_number": "+15551230000"}}]])
        assert r["code"] == "200"
        assert (await got).params["peer"]["call_id"] == "peer-1"
        mock.arm("calling.disconnect", [{"event_type": "calling.call.connect",
                                         "emit": {"connect_state": "disconnected"}}])
        assert (await call.disconnect())["code"] == "200"

        # hang up: ending, ended
        mock.arm("calling.end", [
            {"event_type": "calling.call.state", "emit": {"call_state": "ending", "direction": "inbound"}},
            {"event_type": "calling.call.state",
             "emit": {"call_state": "ended", "end_reason": "hangup", "direction": "inbound"}}])
        await call.hangup()
        await call.wait_for_ended(5)
        assert call.state == "ended"

        # dial with a tag: the scripted winner comes back, the loser ends.
        await bg(mock.post, "/__mock__/scenarios/dial", {
            "tag": f"dial-{transport}", "winner_call_id": f"out-{transport}-1",
            "states": ["created", "ringing", "answered"], "node_id": "mock-relay-node-1",
            "device": {"type": "phone", "params": {"to_number": "+15550002222"}},
            "losers": [{"call_id": f"out-{transport}-2", "states": ["created", "ended"]}]})
        out = await c.dial([[{"type": "phone", "params": {"to_number": "+15550002222",
                                                         "from_number": "+15551230000"}},
                             {"type": "phone", "params": {"to_number": "+15550003333",
                                                         "from_number": "+15551230000"}}]],
                           tag=f"dial-{transport}", dial_timeout=5)
        assert out.call_id == f"out-{transport}-1"
        assert mock.received("calling.dial")[-1]["frame"]["params"]["tag"] == f"dial-{transport}"

    # The journal shows every frame, and every event was acknowledged.
    j = mock.journal()
    methods = [e["method"] for e in j if e["direction"] == "recv"]
    for m in ["signalwire.connect", "calling.answer", "calling.play", "calling.record",
              "calling.collect", "calling.play_and_collect", "calling.send_digits",
              "calling.connect", "calling.disconnect", "calling.end", "calling.dial"]:
        assert m in methods, (m, methods)
    events = [e for e in j if e["direction"] == "send" and e["method"] == "signalwire.event"]
    acks = {e["request_id"] for e in j if e["direction"] == "recv" and e["method"] == ""}
    assert len(events) >= 25
    assert all(e["request_id"] in acks for e in events), "an event was not acknowledged"
    # Each request got exactly one answer with its id.
    answered = [e["request_id"] for e in j if e["direction"] == "send" and e["method"] == ""]
    asked = [e["request_id"] for e in j if e["direction"] == "recv" and e["method"].startswith("calling.")]
    assert all(answered.count(i) == 1 for i in asked)


async def test_bad_params_are_refused_with_the_schema_path(mock_ws):
    async with client_on(mock_ws, "ws") as c:
        with pytest.raises(RelayError) as e:
            await c.execute("calling.answer", {"node_id": "n", "call_id": 5})
        assert e.value.code == -32602 and "/call_id" in e.value.message
        with pytest.raises(RelayError) as e:
            await c.execute("calling.play", {"node_id": "n", "call_id": "c", "play": {"type": "x"}})
        assert "/play" in e.value.message


async def test_bad_credentials_are_refused(ca_file):
    from conftest import Mock
    strict = Mock("--accept", f"{PROJECT}:right-token", tls=True)
    try:
        _active_clients.clear()
        c = RelayClient(project=PROJECT, token="wrong-token", host=strict.host)
        with pytest.raises(RelayError) as e:
            await c.connect()
        assert e.value.code == -32401
        await c.disconnect()
        async with client_on(strict, "wss", token="right-token") as ok:
            assert ok.relay_protocol
    finally:
        strict.stop()
        _active_clients.clear()


async def test_empty_credentials_and_commands_before_connect(mock_ws):
    async with websockets.connect(mock_ws.ws_url) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": "a", "method": "calling.answer",
                                  "params": {"call_id": "c", "node_id": "n"}}))
        r = json.loads(await ws.recv())
        assert r["error"]["data"]["signalwire_error_code"] == "AUTH_REQUIRED"
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": "b", "method": "signalwire.connect",
                                  "params": {"authentication": {"project": "p", "token": ""}}}))
        r = json.loads(await ws.recv())
        assert r["id"] == "b" and r["error"]["code"] == -32401
        await ws.send("{not json")
        r = json.loads(await ws.recv())
        assert r["error"]["code"] == -32700


async def test_pings_both_ways():
    from conftest import Mock
    pinging = Mock("--ping-secs", "1")
    try:
        async with client_on(pinging, "ws") as c:
            r = await c.execute("signalwire.ping", {})
            assert r["timestamp"] > 1e9
            await asyncio.sleep(2.5)
            j = pinging.journal()
        pings = [e["request_id"] for e in j if e["direction"] == "send" and e["method"] == "signalwire.ping"]
        pongs = {e["request_id"] for e in j if e["direction"] == "recv" and e["method"] == ""}
        assert len(pings) >= 2 and all(p in pongs for p in pings), (pings, pongs)
    finally:
        pinging.stop()


def test_server_disconnect_is_followed_by_a_restored_session(mock_wss, ca_file):
    """An app under client.run() (the SDK's reconnect loop): the mock sends
    signalwire.disconnect and closes; the SDK reconnects with its protocol
    string and the session is restored; an inbound call is then answered."""
    mock_wss.reset()
    app = Path(__file__).with_name("answer_app.py")
    env = {**os.environ, "RELAY_HOST": mock_wss.host, "SIGNALWIRE_RELAY_CA_FILE": ca_file}
    proc = subprocess.Popen([sys.executable, str(app)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = mock_wss.wait_sessions(lambda s: any(x["protocol_string"] for x in s))
        protocol = next(x["protocol_string"] for x in first if x["protocol_string"])
        r = mock_wss.post("/__mock__/disconnect", {"restart": False})
        assert r["count"] >= 1 and all(x["acked"] for x in r["closed"]), r
        restored = mock_wss.wait_sessions(
            lambda s: any(x["session_restored"] and x["protocol_string"] == protocol for x in s),
            timeout=15)
        sid = next(x["id"] for x in restored if x["session_restored"])
        assert sid != first[0]["id"]
        connects = mock_wss.received("signalwire.connect")
        assert connects[-1]["frame"]["params"]["protocol"] == protocol
        mock_wss.arm("calling.answer", [{"event_type": "calling.call.state",
                                         "emit": {"call_state": "answered", "direction": "inbound"}}])
        mock_wss.post("/__mock__/inbound_call", {"call_id": "after-restore"}, session_id=sid)
        deadline = time.time() + 10
        while time.time() < deadline:
            if any(e["frame"]["params"].get("call_id") == "after-restore"
                   for e in mock_wss.received("calling.answer")):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the restored session did not answer")
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        print(out)
