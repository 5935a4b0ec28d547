"""Fixtures for the tserve end-to-end suite.

Run with Debian's interpreter: `/usr/bin/python3 -m pytest tests/e2e`.
The binary is build/tserve (override with TSERVE_BINARY); each server runs in its own
temp dir on free 127.0.0.1 ports, with TSERVE_PID_FILE and LOG_LOCATION inside that dir.
"""

from __future__ import annotations

import pytest

import e2e_util
from e2e_util import Server, launch


class ServerFactory:
    """Starts servers for one test; stops them all at teardown and checks exit code 0."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.servers: list[Server] = []

    def __call__(self, config: dict | None = None, env: dict | None = None, args=(),
                 nvml="standin", wait: bool = True, name: str | None = None,
                 config_text: str | None = None, ports: dict | None = None) -> Server:
        workdir = self.tmp_path / (name or f"server{len(self.servers)}")
        server = launch(workdir, config=config, env=env, args=args, nvml=nvml, wait=wait,
                        config_text=config_text, listen_ports=ports)
        self.servers.append(server)
        return server

    def stop_all(self) -> list[str]:
        problems = []
        for server in self.servers:
            if server.failure_reported:
                if server.proc.poll() is None:
                    server.proc.kill()
                    server.proc.wait()
                continue
            try:
                rc = server.stop()
            except AssertionError as exc:
                problems.append(str(exc))
                continue
            if rc != 0:
                problems.append(f"tserve exited with {rc} after SIGTERM (expected 0)\n"
                                + server.describe())
        return problems


@pytest.fixture
def tserve(tmp_path):
    """Factory: tserve(config={...}, env={...}) -> Server (already listening)."""
    factory = ServerFactory(tmp_path)
    yield factory
    problems = factory.stop_all()
    assert not problems, "\n\n".join(problems)


@pytest.fixture
def server(tserve) -> Server:
    """A fresh tserve with the default config (free ports, NVML stand-in)."""
    return tserve()


@pytest.fixture(scope="module")
def module_tserve(tmp_path_factory):
    """Module-scoped factory for servers that several tests share."""
    factory = ServerFactory(tmp_path_factory.mktemp("module"))
    yield factory
    problems = factory.stop_all()
    assert not problems, "\n\n".join(problems)


@pytest.fixture
def hostname() -> str:
    return e2e_util.HOSTNAME
