"""Ending a container on request (mark failed, clear, timeout): SIGTERM, the grace period, SIGKILL, then
removal, done by a short-lived process of its own that outlives whoever asked.

Why a process of its own: every kill path runs inside something about to die.

- Blocking mode: ``on_kill`` runs in the task runner on SIGTERM, and the Task SDK supervisor SIGKILLs the
  runner's whole process group (``os.killpg``) 5 s later (``escalation_delay``), in the middle of a longer
  grace period and before the removal.
- Deferrable mode: the triggerer cancels the trigger's ``on_kill`` again on its next sync (Airflow 3.3
  re-sends the cancel), and a triggerer restart ends it too.

Asking the daemon alone cannot cover it: the daemon finishes a ``stop`` whose client went away, but the
removal is a second call someone must make once the stop returned, and a container cannot be told to
remove itself after it was created (``AutoRemove`` cannot be updated). So the stop-then-remove is handed
to ``python -m dood.lifecycle.teardown``, started in a new session (outside the process group the supervisor
kills). It imports only the Docker SDK (it starts in ~0.3 s; Airflow takes seconds), and its output goes
to a file, never to a pipe that would break when its parent dies. The caller waits for it while it can,
to put the result in the task log; nothing depends on that wait.

While a stop runs, the engine still says "running" (it records no "stopping" state, nor who asked): whoever
stops a container notes it first in the container's run directory (`note_stopping`: who asked, when, the
grace period), which the DooD page reads (`dood.ui.stopping`). The note is for display only: nothing
decides from it (the step can write in its run directory too, so it could forge its own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from docker import APIClient
from docker.errors import APIError, NotFound
from requests.exceptions import RequestException

from dood.engine.target import DockerTarget

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


SLACK_SECONDS = 30  # on top of the grace period: Docker's own time to kill and remove
STOPPING_FILE = ".dood-stopping.json"  # in a container's run directory: who is stopping it (display only)


def stop_container(api: APIClient, container: str, grace_seconds: int) -> None:
    """SIGTERM, then SIGKILL after the grace period; a container already gone is fine."""
    try:
        api.stop(container, timeout=grace_seconds)
    except NotFound:
        pass


def remove_container(api: APIClient, container: str) -> None:
    """Force-remove with its anonymous volumes; already gone, or being removed by someone else, is fine."""
    try:
        api.remove_container(container, force=True, v=True)
    except NotFound:
        pass
    except APIError as exc:
        if "already in progress" not in str(exc):
            raise


def discard(api: APIClient, container: str, grace_seconds: int) -> None:
    """End a container for good: stop (SIGTERM, the grace period, SIGKILL), then remove. The one spelling of
    it, here in this process (the janitor) or in one that outlives a task runner (`detach`, below)."""
    stop_container(api, container, grace_seconds)
    remove_container(api, container)


def note_stopping(runs_root: str | None, container_name: str, who: str, grace_seconds: int) -> None:
    """Note in the container's run directory (`<runs_root>/<name>`, when this process sees it) that `who` is
    stopping it now, with this grace period, for the DooD page. Best effort: no directory, no note. The
    directory is the step's too: the note is written under a fresh name (O_EXCL, O_NOFOLLOW: never through
    a link the step placed), then renamed over whatever the step left at its name."""
    if not runs_root or not container_name or "/" in container_name or container_name.startswith("."):
        return
    try:
        directory = os.open(f"{runs_root}/{container_name}", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    temporary = f".dood-stopping-{secrets.token_hex(8)}.tmp"
    note = {"who": who[:300], "asked_at": time.time(), "grace_seconds": int(grace_seconds)}
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(temporary, flags, 0o644, dir_fd=directory), "w", encoding="utf-8") as handle:
            json.dump(note, handle)
        os.replace(temporary, STOPPING_FILE, src_dir_fd=directory, dst_dir_fd=directory)
    except OSError:
        pass  # a display aid: a stop never fails for want of it
    finally:
        os.close(directory)


def discard_all(
    api: APIClient,
    containers: Sequence[str],
    grace_seconds: int,
    *,
    workers: int = 16,
    stop_signals: Mapping[str, str] | None = None,
) -> dict[str, BaseException | None]:
    """End many containers for good, their grace periods running at once: `docker stop` of each (its stop
    signal, at most `grace_seconds` for it to exit, then SIGKILL), then its removal, as `discard` does for
    one; but every container is signalled first (`workers` API calls at a time), so a container that
    ignores its signal keeps no other waiting for its grace period: N such orphans take one grace period,
    not N / `workers`. Each gets its full grace period from its own signal, and one signal only (a second
    SIGTERM is "abort now" to some programs). `stop_signals`: a container's own `Config.StopSignal`, when it
    has one (SIGTERM otherwise). Returns, per container, the error that kept it from being ended (None: ended)."""
    signals = stop_signals or {}
    signalled: dict[str, float] = {}
    errors: dict[str, BaseException | None] = {}

    def signal(container: str) -> None:
        try:
            api.kill(container, signal=signals.get(container) or "SIGTERM")
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: it is not running (ended meanwhile): nothing to signal
                raise
        signalled[container] = time.monotonic()

    def end(container: str) -> None:
        if container not in signalled:
            return  # the signal failed: reported, not removed behind its back
        remaining = signalled[container] + grace_seconds - time.monotonic()
        try:
            api.wait(container, timeout=max(remaining, 0.05))  # type: ignore[arg-type] # HTTP timeout: the grace end
        except NotFound:
            return
        except RequestException:
            pass  # still running at the end of its grace period: SIGKILL
        except APIError:  # the wait itself failed: the grace period still runs its full length
            time.sleep(max(0.0, signalled[container] + grace_seconds - time.monotonic()))
        else:
            remove_container(api, container)
            return
        try:
            api.kill(container, signal="SIGKILL")
        except NotFound:
            return
        except APIError as exc:
            if exc.status_code != 409:
                raise
        remove_container(api, container)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(containers) or 1))) as pool:
        for step in (signal, end):
            for container, error in zip(containers, pool.map(_caught(step), containers), strict=True):
                if error is not None and errors.get(container) is None:
                    errors[container] = error
    return {container: errors.get(container) for container in containers}


def _caught(call):
    def run(container: str) -> BaseException | None:
        try:
            call(container)
        except Exception as exc:  # noqa: BLE001 - the caller reports it, after the other containers
            return exc
        return None

    return run


class Ending:
    """A running `python -m dood.lifecycle.teardown`; waiting for it is optional."""

    def __init__(self, process: subprocess.Popen, log_path: str, container: str, grace_seconds: int) -> None:
        self.process = process
        self.log_path = log_path
        self.container = container
        self.grace_seconds = grace_seconds

    @property
    def pid(self) -> int:
        return self.process.pid

    def report(self) -> str | None:
        """What happened, once the process ended (None while it runs)."""
        code = self.process.poll()
        if code is None:
            return None
        if code == 0:
            return f"Container {self.container[:12]} stopped and removed."
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                detail = handle.read().strip()
            os.unlink(self.log_path)
        except OSError:
            detail = "(no output)"
        return f"Ending container {self.container[:12]} failed (exit {code}): {detail}"

    def wait(self, timeout: float | None = None) -> str:
        """Block until it ended (or `timeout`); a kill of this process meanwhile does not stop it."""
        timeout = self.grace_seconds + SLACK_SECONDS if timeout is None else timeout
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.report() or self._still_running()

    async def wait_async(self, poll_seconds: float = 0.2) -> str:
        """As `wait`, without blocking the event loop; cancelling it cancels only the waiting."""
        deadline = time.monotonic() + self.grace_seconds + SLACK_SECONDS
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(poll_seconds)
        return self.report() or self._still_running()

    def _still_running(self) -> str:
        return f"Container {self.container[:12]} is still being ended by pid {self.pid} (log {self.log_path})."


def detach(
    target: DockerTarget, container: str, grace_seconds: int, *, runs_root: str | None = None, who: str | None = None
) -> Ending:
    """Start the stop-then-remove of `container` in a new session, so it outlives the caller; with
    `runs_root` and `who`, the stop is noted for the DooD page first (`note_stopping`)."""
    handle, log_path = tempfile.mkstemp(prefix="dood-teardown-", suffix=".log")
    noting = ["--runs-root", runs_root, "--who", who] if runs_root and who else []
    try:
        process = subprocess.Popen(  # noqa: S603 - our own module, with arguments we built
            [
                *(sys.executable, "-m", "dood.lifecycle.teardown", *target.arguments()),
                *("--grace", str(grace_seconds), "--log", log_path, *noting, container),
            ],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in the task runner's process group, which the supervisor killpg()s
            close_fds=True,
        )
    finally:
        os.close(handle)
    return Ending(process, log_path, container, grace_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dood.lifecycle.teardown", description=__doc__.splitlines()[0])
    parser.add_argument("container", help="container id or name")
    parser.add_argument("--grace", type=int, required=True, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--docker-url", required=True)
    parser.add_argument("--api-version", default="auto")
    parser.add_argument("--tls-ca-cert")
    parser.add_argument("--tls-client-cert")
    parser.add_argument("--tls-client-key")
    parser.add_argument("--log", help="this process's output file: deleted on success (nothing to report)")
    parser.add_argument("--runs-root", help="note the stop in the container's run directory under this root")
    parser.add_argument("--who", help="who asked for the stop, for the note")
    args = parser.parse_args(argv)
    target = DockerTarget(
        args.docker_url, args.api_version, args.tls_ca_cert, args.tls_client_cert, args.tls_client_key
    )
    api = target.client(timeout_seconds=SLACK_SECONDS)
    if args.runs_root and args.who:
        try:
            name = api.inspect_container(args.container)["Name"].lstrip("/")
        except (APIError, KeyError):
            name = ""  # gone already, or unreadable: nothing to note
        note_stopping(args.runs_root, name, args.who, args.grace)
    discard(api, args.container, args.grace)
    if args.log:
        os.unlink(args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
