"""Differential fuzz of dood-proxy's create check, on the real engine: what the proxy lets through, the daemon
must hold to the policy.

Generated `POST /containers/create` bodies (tests/create_fuzz.py: near-valid, mutated with hostile fields,
sent as raw JSON text so keys can repeat and change case) go through a real dood-proxy (non-root uid 50001
with the socket's group, as compose runs it). Every body it allows (201) is inspected on the raw socket and
removed at once (never started); the daemon's inspect must satisfy `broken_invariants` (identity, capabilities,
namespaces, mounts, labels, resources, ports). The corpus (fuzz_corpus/*.json: bodies once allowed, bodies
that once broke an invariant) is replayed first. The test fails listing each body and what it broke.

Knobs: DOOD_FUZZ_EXAMPLES (generated bodies, default 3000), DOOD_FUZZ_SECONDS (time for them, default 110),
DOOD_FUZZ_SEED (another seed than the fixed one), DOOD_FUZZ_SAVE (a directory: new interesting bodies are
written there as corpus files; use tests/integration/fuzz_corpus to grow the corpus).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.create_fuzz import NONCE_LABEL, Expect, FuzzPolicy, broken_invariants, create_bodies
from tests.integration.conftest import TEST_IMAGE
from tests.integration.proxy_process import PROXY_UID, UnixHTTPConnection, running_proxy

CORPUS = Path(__file__).parent / "fuzz_corpus"
EXAMPLES = int(os.environ.get("DOOD_FUZZ_EXAMPLES", "3000"))
SECONDS = float(os.environ.get("DOOD_FUZZ_SECONDS", "110"))
SEED = os.environ.get("DOOD_FUZZ_SEED")
SAVE = os.environ.get("DOOD_FUZZ_SAVE")
API = "/v1.41"


def _layout(base: Path) -> Path:
    """The allowed root and what lies around it: root-owned 0755 directories, a leaf, links, a socket."""
    data = base / "data"
    for directory in (data, data / "a", data / "a" / "b", data / "ro", data / "ro" / "x", base / "outside"):
        directory.mkdir()
        directory.chmod(0o755)
    (base / "data-evil" / "x").mkdir(parents=True)
    (data / "file.txt").write_text("a file\n")
    leaf = data / "leaf"  # as dood.mounts.source_safety.make_leaf makes one: root's, shared with the container's group
    leaf.mkdir()
    os.chown(leaf, 0, 50000)
    leaf.chmod(0o2770)
    (data / "link").symlink_to("/")
    (data / "rolink").symlink_to(data / "ro")
    with contextlib.closing(socket.socket(socket.AF_UNIX)) as listener:
        listener.bind(str(data / "app.sock"))
    return data


@pytest.fixture(scope="module")
def fuzz_env(docker_api):
    base = Path(tempfile.mkdtemp(prefix="dood-fuzz-", dir="/tmp"))
    base.chmod(0o755)
    data = _layout(base)
    (base / "proxy").mkdir()
    policy = FuzzPolicy(data=str(data), sock_gid=os.stat("/var/run/docker.sock").st_gid)
    baseline = docker_api.create_container(TEST_IMAGE, ["true"], user="50000:0")["Id"]
    try:
        plain = docker_api.inspect_container(baseline)["HostConfig"]
    finally:
        docker_api.remove_container(baseline, force=True)
    expect = Expect(
        policy=policy,
        image_id=docker_api.inspect_image(TEST_IMAGE)["Id"],
        masked_paths=tuple(plain["MaskedPaths"] or ()),
        readonly_paths=tuple(plain["ReadonlyPaths"] or ()),
    )
    nonce = uuid.uuid4().hex[:12]
    try:
        with running_proxy(base / "proxy", policy.yaml(), "--stack", policy.stack, uid=PROXY_UID) as proxy:
            yield SimpleNamespace(proxy=proxy, policy=policy, expect=expect, nonce=nonce, base=base)
    finally:
        for container in docker_api.containers(all=True, filters={"label": f"{NONCE_LABEL}={nonce}"}):
            docker_api.remove_container(container["Id"], force=True, v=True)
        for volume in (docker_api.volumes() or {}).get("Volumes") or []:
            if volume["Name"].startswith("dood-fuzz-vol") or volume["Name"] == "evil-vol":
                with contextlib.suppress(Exception):
                    docker_api.remove_volume(volume["Name"], force=True)
        shutil.rmtree(base, ignore_errors=True)


class Fuzzer:
    """Sends bodies through the proxy, checks what got created on the raw socket, and removes it."""

    def __init__(self, env, docker_api) -> None:
        self.env, self.docker = env, docker_api
        self.connection: UnixHTTPConnection | None = None
        self.statuses: Counter[int] = Counter()
        self.findings: list[tuple[str, str, list[str]]] = []  # (origin, body, broken invariants)
        self.allowed_tags: set[str] = set()
        self.saved: list[str] = []
        self.errors: list[str] = []

    def send(self, text: str) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = UnixHTTPConnection(self.env.proxy.socket)
            try:
                self.connection.request(
                    "POST", f"{API}/containers/create", body=text.encode(), headers={"Content-Type": "application/json"}
                )
                response = self.connection.getresponse()
                answer = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status, answer
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def check(self, template: str, tags: frozenset[str] = frozenset(), origin: str = "generated") -> None:
        text = self.env.policy.fill(template, self.env.nonce)
        status, answer = self.send(text)
        self.statuses[status] += 1
        if status != 201:
            if status >= 500:  # the daemon's own errors are relayed (some invalid mounts are 500 in 20.10)
                self.errors.append(f"{status} {answer[:200]!r} for {template}")
            return
        container = json.loads(answer)["Id"]
        try:
            inspect = self.docker.inspect_container(container)
        finally:
            self.docker.remove_container(container, force=True, v=True)
        broken = broken_invariants(inspect, self.env.expect)
        if broken:
            self.findings.append((origin, template, broken))
            self.save("broke", template, tags, broken)
        elif tags - self.allowed_tags and origin == "generated":
            self.save("allowed", template, tags, [])
        self.allowed_tags |= tags

    def save(self, why: str, template: str, tags: frozenset[str], broken: list[str]) -> None:
        if not SAVE:
            return
        name = f"{why}-{hashlib.sha256(template.encode()).hexdigest()[:12]}.json"
        record = {"why": why, "tags": sorted(tags), "broken": broken, "body": template}
        Path(SAVE).mkdir(parents=True, exist_ok=True)
        (Path(SAVE) / name).write_text(json.dumps(record, indent=1) + "\n")
        self.saved.append(name)

    def report(self) -> str:
        """Each invariant broken, how many bodies broke it, and the shortest two of them."""
        by_invariant: dict[str, list[tuple[str, str, str]]] = {}
        for origin, body, broken in self.findings:
            for message in broken:
                kind = " ".join(message.split(" ")[:2])  # e.g. "namespace: HostConfig.CgroupnsMode"
                by_invariant.setdefault(kind, []).append((origin, body, message))
        lines = []
        for kind, cases in sorted(by_invariant.items(), key=lambda item: -len(item[1])):
            lines.append(f"* {kind}: broken by {len(cases)} bodies, e.g.")
            for origin, body, message in sorted(cases, key=lambda case: len(case[1]))[:2]:
                lines.append(f"    {message}\n      [{origin}] {body}")
        return "\n".join(lines)


def test_what_the_proxy_allows_the_daemon_holds_to_the_policy(fuzz_env, docker_api):
    fuzzer = Fuzzer(fuzz_env, docker_api)
    corpus = sorted(CORPUS.glob("*.json"))
    for path in corpus:
        record = json.loads(path.read_text())
        fuzzer.check(record["body"], frozenset(record.get("tags", ())), origin=f"corpus {path.name}")
    replayed = sum(fuzzer.statuses.values())

    deadline = time.monotonic() + SECONDS
    skipped = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(create_bodies())
    def fuzz(generated: tuple[str, frozenset[str]]) -> None:
        nonlocal skipped
        if time.monotonic() > deadline:  # the time box: the remaining bodies are generated, not sent
            skipped += 1
            return
        fuzzer.check(*generated)

    if SEED is not None:
        fuzz = seed(int(SEED))(fuzz)
    started = time.monotonic()
    fuzz()
    elapsed = time.monotonic() - started
    fuzzer.close()

    leftovers = docker_api.containers(all=True, filters={"label": f"{NONCE_LABEL}={fuzz_env.nonce}"})
    tried = sum(fuzzer.statuses.values())
    print(
        f"\nfuzz: {replayed} corpus bodies, then {tried - replayed} generated in {elapsed:.0f}s "
        f"({skipped} generated after the time box, not sent); answers {dict(sorted(fuzzer.statuses.items()))}; "
        f"{len(fuzzer.findings)} bodies broke an invariant; saved {len(fuzzer.saved)} to {SAVE}"
    )
    for error in fuzzer.errors[:5]:
        print(f"daemon error relayed: {error}")
    assert not leftovers, f"containers were left after every allowed one was removed: {leftovers}"
    assert fuzzer.statuses[201] > tried // 10, f"too few bodies allowed to test anything: {fuzzer.statuses}"
    if fuzzer.findings:
        pytest.fail(
            f"{len(fuzzer.findings)} of {fuzzer.statuses[201]} allowed bodies broke an invariant "
            f"(of {tried} tried):\n{fuzzer.report()}",
            pytrace=False,
        )
