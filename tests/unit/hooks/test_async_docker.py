"""dood.hooks.async_docker: one TLS context per endpoint's files, shared by every trigger session, renewed
when a certificate file changes on disk."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from dood.engine.target import DockerTarget
from dood.hooks.async_docker import async_docker, ssl_context

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "make-host-certs.sh"


def test_sessions_share_one_context_until_a_file_changes(tmp_path):
    subprocess.run(["bash", str(SCRIPT), str(tmp_path), "host-b"], check=True, capture_output=True)
    files = [str(tmp_path / "client" / name) for name in ("ca.pem", "cert.pem", "key.pem")]
    first = ssl_context(*files)
    assert first is not None and ssl_context(*files) is first
    stat = os.stat(files[1])
    os.utime(files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a renewed certificate
    assert ssl_context(*files) is not first
    assert ssl_context(None, None, None) is None


def test_a_session_uses_https_for_a_tls_endpoint(tmp_path):
    asyncio.run(_https_session(tmp_path))


async def _https_session(tmp_path):
    subprocess.run(["bash", str(SCRIPT), str(tmp_path), "host-b"], check=True, capture_output=True)
    client = tmp_path / "client"
    docker = async_docker(
        DockerTarget(
            "tcp://127.0.0.1:1",
            "1.41",
            tls_ca_cert=str(client / "ca.pem"),
            tls_client_cert=str(client / "cert.pem"),
            tls_client_key=str(client / "key.pem"),
        )
    )
    try:
        assert docker.docker_host == "https://127.0.0.1:1"
        assert docker.connector.force_close  # no idle TLS connection (and its 256 KiB buffer) kept per trigger
    finally:
        await docker.close()
    assert docker.connector.closed
