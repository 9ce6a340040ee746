"""Runs SignalWire's Python SDK (signalwire-sdk, unmodified) against our
mock-relay in RELAY mode. Started by crates/mock-relay/tests/relay_sdk.rs,
which passes MOCK_RELAY_BIN (the binary) and RELAY_TLS_DIR (ca.pem,
relay.pem, relay.key made with the cluster CA code)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

# Several clients in one test process (reconnect tests).
os.environ.setdefault("RELAY_MAX_CONNECTIONS", "16")


def _need(var: str) -> str:
    v = os.environ.get(var)
    if not v:
        pytest.exit(
            f"{var} is not set: run these through `cargo test -p mock-relay --test relay_sdk`",
            returncode=2,
        )
    return v


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mock:
    """One mock-relay --relay process and its control plane."""

    def __init__(self, *extra: str, tls: bool = False):
        self.ws_port = free_port()
        self.http_port = free_port()
        self.tls_dir = Path(_need("RELAY_TLS_DIR"))
        args = [
            _need("MOCK_RELAY_BIN"),
            "--relay",
            "--ws-port", str(self.ws_port),
            "--http-port", str(self.http_port),
            *extra,
        ]
        if tls:
            args += ["--tls-cert", str(self.tls_dir / "relay.pem"),
                     "--tls-key", str(self.tls_dir / "relay.key")]
        self.tls = tls
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.http = f"http://127.0.0.1:{self.http_port}"
        deadline = time.time() + 15
        while True:
            try:
                h = requests.get(f"{self.http}/__mock__/health", timeout=1).json()
                if h["status"] == "ok":
                    self.health0 = h
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mock-relay did not start: {err}")
            time.sleep(0.05)

    @property
    def host(self) -> str:
        """What the SDK's host= takes (it prepends wss://)."""
        return f"127.0.0.1:{self.ws_port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.ws_port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    # -- control plane -------------------------------------------------
    def get(self, path: str) -> Any:
        r = requests.get(self.http + path, timeout=5)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        r = requests.post(self.http + path, data=json.dumps(body) if body is not None else None,
                          params=params or None, timeout=20,
                          headers={"Content-Type": "application/json"})
        r.raise_for_status()
        return r.json()

    def reset(self) -> None:
        self.post("/__mock__/journal/reset")
        self.post("/__mock__/scenarios/reset")

    def journal(self) -> list[dict[str, Any]]:
        return self.get("/__mock__/journal")

    def received(self, method: str) -> list[dict[str, Any]]:
        return [e for e in self.journal() if e["direction"] == "recv" and e["method"] == method]

    def events_sent(self, event_type: str | None = None) -> list[dict[str, Any]]:
        out = []
        for e in self.journal():
            f = e["frame"]
            if e["direction"] == "send" and isinstance(f, dict) and f.get("method") == "signalwire.event":
                if event_type is None or f["params"]["event_type"] == event_type:
                    out.append(e)
        return out

    def arm(self, method: str, events: list[dict[str, Any]]) -> None:
        self.post(f"/__mock__/scenarios/{method}", events)

    def sessions(self) -> list[dict[str, Any]]:
        return self.get("/__mock__/sessions")["sessions"]

    def wait_sessions(self, pred, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.sessions()
            if pred(s):
                return s
            time.sleep(0.05)
        raise AssertionError(f"sessions never matched: {self.sessions()}")


@pytest.fixture(scope="session")
def mock_ws():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture(scope="session")
def mock_wss():
    m = Mock(tls=True)
    yield m
    m.stop()


@pytest.fixture
def ca_file(monkeypatch):
    """The SDK's own way to trust a private CA for wss."""
    path = str(Path(_need("RELAY_TLS_DIR")) / "ca.pem")
    monkeypatch.setenv("SIGNALWIRE_RELAY_CA_FILE", path)
    return path
