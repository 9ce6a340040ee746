"""A drop-in for SignalWire's `mock_relay` test package (its
``MockRelayServer``) that runs switchy's mock-relay in RELAY mode instead,
so test suites written for that mock run unchanged against ours.

Put this directory where such a suite looks for the package (for
signalwire-python: ``../porting-sdk/test_harness/mock_relay/``, or on
PYTHONPATH) and set MOCK_RELAY_BIN to the mock-relay binary
(default: ``mock-relay`` on PATH)."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request

__all__ = ["MockRelayServer", "create_server"]

DEFAULT_HOST = os.environ.get("MOCK_RELAY_HOST", "127.0.0.1")
DEFAULT_WS_PORT = int(os.environ.get("MOCK_RELAY_PORT", "8773"))
DEFAULT_HTTP_PORT = int(os.environ.get("MOCK_RELAY_HTTP_PORT", str(DEFAULT_WS_PORT + 1000)))


class MockRelayServer:
    """Starts ``mock-relay --relay`` on the given ports; stop() ends it."""

    def __init__(self, host=DEFAULT_HOST, ws_port=None, http_port=None,
                 schema_root=None, log_level="warning"):
        self.host = host
        self.ws_port = DEFAULT_WS_PORT if ws_port is None else ws_port
        self.http_port = DEFAULT_HTTP_PORT if http_port is None else http_port
        self._schema_root = schema_root
        self._log_level = log_level
        self._proc = None

    @property
    def ws_url(self):
        return f"ws://{self.host}:{self.ws_port}"

    @property
    def http_url(self):
        return f"http://{self.host}:{self.http_port}"

    @property
    def relay_host(self):
        return f"{self.host}:{self.ws_port}"

    def start(self, ready_timeout=10.0):
        args = [os.environ.get("MOCK_RELAY_BIN", "mock-relay"), "--relay",
                "--bind", self.host, "--ws-port", str(self.ws_port),
                "--http-port", str(self.http_port)]
        if self._schema_root:
            args += ["--schema-root", str(self._schema_root)]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", self._log_level)}
        self._proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
        deadline = time.time() + ready_timeout
        while time.time() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mock-relay exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/__mock__/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mock-relay did not answer on {self.http_url} within {ready_timeout}s")

    def stop(self, timeout=5.0):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None


def create_server(host=None, ws_port=None, http_port=None):
    return MockRelayServer(host=host or DEFAULT_HOST, ws_port=ws_port, http_port=http_port)
