"""DoodHook's explanation when no Docker daemon answers: the classic DooD causes, each with its fix."""

from __future__ import annotations

import os
import socket

from dood.hooks.dood import explain_unreachable


def test_missing_socket_says_to_mount_it(tmp_path):
    message = explain_unreachable(f"unix://{tmp_path}/docker.sock")
    assert "does not exist" in message and "/var/run/docker.sock:/var/run/docker.sock" in message


def test_socket_without_permission_names_its_group_and_group_add(tmp_path, monkeypatch):
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
        message = explain_unreachable(f"unix://{path}")
    assert "Permission denied" in message
    assert f"group {path.stat().st_gid}" in message and "group_add" in message and "DOCKER_GID" in message


def test_accessible_socket_without_daemon_says_dockerd_is_not_running(tmp_path):
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        assert "no daemon answers" in explain_unreachable(f"unix://{path}")


def test_tcp_endpoint_points_at_the_url_and_tls():
    assert "tcp://proxy:2375" in explain_unreachable("tcp://proxy:2375")
