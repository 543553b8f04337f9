"""docs/hosts.md's deployment commands, run as printed, with two real engines standing for the two machines.

Every ```bash block of docs/hosts.md is either run here or named in SKIPPED with the reason; a new block fails
`test_every_block_is_run_or_skipped` until it is one or the other. The blocks run in two copies of the
checkout (the working tree's tracked and unignored files): `dood-docs-a/` is the main host (the main engine,
compose project `dood-docs-a`), `dood-docs-b/` the extra host gpu-b (a second dockerd of the test's own,
tests/integration/second_engine.py, reached with DOCKER_HOST, its socket given as DOOD_DOCKER_SOCKET). What
the test changes in a block, and only that:

- the docs' example addresses, names and paths (SUBSTITUTIONS): both "machines" are this one, so the main
  host's and gpu-b's addresses are the second engine's bridge address (their published ports differ), the
  shared storage is the main host's data root, and /etc/dood is a directory of the test's;
- a line marked `# other machine` (scp) becomes a local copy into gpu-b's home;
- the main host's `.env` gets a free AIRFLOW_API_PORT before the docs' block appends to it, and config/compose.yaml
  the docs' `hosts:` section (the doc says: add the host to config/compose.yaml);
- gpu-b's compose networks are made beforehand with subnets of the test's own (two engines on one machine share
  its routing table; dockerd B would pick the subnets A already routes).

Opt-in like the rest of tests/e2e (DOOD_E2E=1); brings up a Celery stack on each engine (about 5 minutes).
Run under the compose lock: flock /tmp/dood-compose.lock .venv/bin/python -m pytest tests/e2e/test_docs_hosts.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import yaml

from tests.integration.second_engine import SecondEngine
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "hosts.md"
A_PROJECT = "dood-docs-a"
B_PROJECT = "dood-docs-b"
A_FILES = ["-f", "docker-compose.yml", "-f", "docker-compose.hosts-main.yml", "--profile", "celery"]
B_FILES = ["-f", "docker-compose.host.yml", "--env-file", "host.env"]
OTHER_MACHINE = "# other machine"

# First words of each block -> why it is not run here.
SKIPPED = {
    "iptables -I DOCKER-USER": "a real extra host's firewall: would change this machine's, where both 'hosts' are",
    "for port in 5432 6379 8080": "a real main host's firewall: would change this machine's, where both 'hosts' are",
}
# First words of each block run here -> the machine it runs on ("a" main, "b" gpu-b).
RUN = {
    "scripts/make-host-certs.sh var/certs": "a",
    "cat >> .env": "a",
    "docker-compose exec -T airflow-scheduler bash -c": "a",  # the pools
    "docker-compose exec -T airflow-scheduler tar": "a",  # the secrets gpu-b needs
    "install -d -m 700": "b",
    "docker-compose -f docker-compose.host.yml --env-file host.env exec": "b",
    "docker-compose exec -T airflow-triggerer": "a",
}


def bash_blocks(text: str) -> list[str]:
    """The ```bash blocks, dedented (a block inside a numbered item is indented)."""
    return [textwrap.dedent(m.group(2)) for m in re.finditer(r"^( *)```bash\n(.*?)^\1```", text, re.M | re.S)]


def key_of(block: str, table: dict[str, str]) -> str | None:
    return next((key for key in table if block.startswith(key)), None)


def test_every_block_is_run_or_skipped():
    blocks = bash_blocks(DOC.read_text())
    assert len(blocks) >= len(RUN) + len(SKIPPED), f"fewer bash blocks than expected in {DOC}: {blocks}"
    unknown = [b.splitlines()[0] for b in blocks if key_of(b, RUN) is None and key_of(b, SKIPPED) is None]
    assert not unknown, f"docs/hosts.md blocks neither run nor skipped by {__name__}: {unknown}"
    for table in (RUN, SKIPPED):
        for key in table:
            assert sum(b.startswith(key) for b in blocks) == 1, f"no single block of docs/hosts.md starts with {key!r}"


def wait_for(what: str, check: Callable[[], object], timeout: float, describe: Callable[[], str] = lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f}s for {what}; {describe()}")
        time.sleep(2)


def copy_checkout(dest: Path) -> None:
    """The working tree's tracked and unignored files, and the build caches (git-ignored wheels)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout  # fmt: skip
    dest.mkdir(parents=True)
    listing = dest.parent / f"{dest.name}.files"
    listing.write_bytes(files)
    packed = subprocess.Popen(["tar", "--null", "-T", str(listing), "-c", "--ignore-failed-read"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=packed.stdout, check=True)
    assert packed.wait() == 0, f"could not copy the checkout into {dest}"
    for cache in ("var/compose/wheels", "images/ml-example/wheels"):
        if (REPO / cache).is_dir():
            (dest / cache).parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(dest / cache, ignore_errors=True)
            (dest / cache).symlink_to(REPO / cache)


@dataclass
class Machine:
    name: str
    cwd: Path
    env: dict[str, str]
    substitutions: dict[str, str]
    home: Path
    other_home: Path | None = None  # where `# other machine` copies go

    def run(self, script: str, timeout: float = 900) -> str:
        lines = []
        for line in script.splitlines():
            if line.rstrip().endswith(OTHER_MACHINE):  # scp -r SRC... USER@HOST: -> a copy into the other home
                words = line.split("#")[0].split()
                assert words[:2] == ["scp", "-r"] and words[-1].endswith(":"), f"cannot emulate {line!r}"
                line = f"cp -r {' '.join(words[2:-1])} {self.other_home}/"
            lines.append(line)
        script = "\n".join(lines) + "\n"
        for example, real in self.substitutions.items():
            script = script.replace(example, real)
        path = self.cwd.parent / f"block-{self.name}-{abs(hash(script))}.sh"
        path.write_text(script)
        print(f"--- on {self.name} ({self.cwd.name}):\n{script}", flush=True)
        done = subprocess.run(["bash", "-euo", "pipefail", str(path)], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
        output = done.stdout + done.stderr
        print(output, flush=True)
        assert done.returncode == 0, (
            f"docs/hosts.md block failed on {self.name} (rc {done.returncode}):\n{script}\n{output}"
        )
        return done.stdout

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker-compose", *args], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              check=check, timeout=600)  # fmt: skip


def health(client: docker.DockerClient, project: str) -> dict[str, str]:
    states = {}
    for c in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
        service = c.labels.get("com.docker.compose.service", c.name)
        state = c.attrs["State"]
        if "Health" in state:
            states[service] = state["Health"]["Status"]
        elif state["Status"] == "running" or (state["Status"] == "exited" and state["ExitCode"] == 0):
            states[service] = "ok"  # no health check: running, or a one-off that succeeded (airflow-init)
        else:
            states[service] = f"{state['Status']} (exit {state['ExitCode']})"
    return states


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("runs the docs' root commands (chown, a second dockerd)")
    blocks = {key_of(b, RUN): b for b in bash_blocks(DOC.read_text()) if key_of(b, RUN)}
    root = Path(tmp_path_factory.mktemp("docs-hosts"))
    engine = SecondEngine.for_session("docs", subnet=216)
    engine.start()
    address = engine.gateway.split("/")[0]
    a_dir, b_dir = root / A_PROJECT, root / B_PROJECT
    main = docker.from_env()
    b_api = docker.DockerClient(base_url=engine.url, timeout=300)
    a = b = None
    try:
        copy_checkout(a_dir)
        copy_checkout(b_dir)
        shared = a_dir / "var" / "compose" / "dood"  # compose-setup.sh's default data root: the "NFS" share
        etc = root / "etc-dood"
        common = {
            "10.0.0.10": address,
            "10.0.0.12": address,
            "gpu-b.lan": address,
            "/mnt/nfs/dood": str(shared),
            "/etc/dood": str(etc),
            "<the main stack's name: its DOOD_STACK, else its compose project>": A_PROJECT,
        }
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOOD_", "COMPOSE_"))}
        base_env["DOCKER_BUILDKIT"] = "0"
        port = free_port()
        a = Machine("main host", a_dir, {**base_env, "HOME": str(root / "home-a")}, common, root / "home-a")
        b_env = {
            **base_env,
            "HOME": str(root / "home-b"),
            "DOCKER_HOST": engine.url,
            "DOOD_DOCKER_SOCKET": str(engine.socket),
            "AIRFLOW_API_PORT": str(port),  # the main stack's value (host.yml's header)
        }
        b = Machine("gpu-b", b_dir, b_env, {**common, "/var/run/docker.sock": str(engine.socket)}, root / "home-b")
        a.other_home = b.home
        a.home.mkdir()
        b.home.mkdir()

        # The docs' hosts: section, into the one config both checkouts carry.
        first_yaml = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S).group(1)
        for example, real in common.items():
            first_yaml = first_yaml.replace(example, real)
        hosts = {"hosts": yaml.safe_load(first_yaml)["hosts"]}
        for checkout in (a_dir, b_dir):
            config = checkout / "config" / "compose.yaml"
            config.write_text(config.read_text() + "\n" + yaml.safe_dump(hosts, sort_keys=False))
        (a_dir / ".env").write_text(f"AIRFLOW_API_PORT={port}\nAIRFLOW_EXECUTOR=CeleryExecutor\n")
        yield a, b, blocks, main, b_api, engine
    finally:
        for machine, files in ((b, B_FILES), (a, A_FILES)):
            if machine is not None and machine.cwd.exists():
                down = machine.compose(*files, "down", "-v", "--remove-orphans", check=False)
                if down.returncode:
                    print(f"down on {machine.name}: {down.stdout}{down.stderr}")
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)


def make_b_networks(b_api: docker.DockerClient, engine: SecondEngine) -> None:
    """gpu-b's compose networks, with subnets next to the engine's own bridge (never one the main engine routes)."""
    octets = engine.gateway.split("/")[0].split(".")
    for index, (name, internal) in enumerate((("default", False), ("docker-api", True))):
        subnet = f"10.217.{octets[2]}.{index * 128}/25"
        b_api.networks.create(
            f"{B_PROJECT}_{name}",
            driver="bridge",
            internal=internal,
            ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)]),
            labels={
                "com.docker.compose.network": name,
                "com.docker.compose.project": B_PROJECT,
                "com.docker.compose.version": "1.29.2",
            },
        )


def test_docs_hosts_commands_as_printed(two_hosts):
    a, b, blocks, main, b_api, engine = two_hosts
    started = time.monotonic()
    # The certificates, and the main host's stack
    a.run(blocks["scripts/make-host-certs.sh var/certs"], timeout=120)
    assert (a.cwd / "var/certs/client/key.pem").stat().st_uid == 50000
    a.run(blocks["cat >> .env"], timeout=1800)
    env_file = (a.cwd / ".env").read_text()
    assert "DOOD_CERTS=./var/certs" in env_file, env_file
    images = a.compose(*A_FILES, "config").stdout
    for image in sorted(set(re.findall(r"^\s+image: (\S+)", images, re.M))):
        assert main.images.list(name=image), f"{image}, named by the main host's compose files, is not built locally"
    wait_for(
        "the main host's stack to be healthy (postgres, redis, proxies, api-server, scheduler, triggerer, worker)",
        lambda: (
            (s := health(main, A_PROJECT))
            and all(v in ("healthy", "ok") for v in s.values())
            and s.get("airflow-worker") == "healthy"
        ),
        timeout=420,
        describe=lambda: f"states {health(main, A_PROJECT)}",
    )
    print(f"main host up in {time.monotonic() - started:.0f}s", flush=True)
    a.run(blocks["docker-compose exec -T airflow-scheduler bash -c"], timeout=180)
    a.run(blocks["docker-compose exec -T airflow-scheduler tar"], timeout=120)
    assert sorted(p.name for p in b.home.iterdir()) == ["gpu-b", "gpu-b-secrets.tar"]

    # gpu-b
    engine.load_image(dict(line.split("=", 1) for line in env_file.splitlines() if "=" in line)["AIRFLOW_IMAGE"])
    make_b_networks(b_api, engine)
    b.run(blocks["install -d -m 700"], timeout=300)
    secrets = sorted(p.name for p in (b.cwd.parent / "etc-dood" / "secrets").iterdir())
    assert secrets == ["api_secret_key", "fernet_key", "jwt_secret"], f"gpu-b got {secrets}"
    wait_for(
        "gpu-b's proxy and worker to be healthy",
        lambda: (
            health(b_api, B_PROJECT).get("airflow-worker") == "healthy"
            and health(b_api, B_PROJECT).get("dood-proxy") == "healthy"
        ),
        timeout=300,
        describe=lambda: f"states {health(b_api, B_PROJECT)}",
    )
    checked = b.run(blocks["docker-compose -f docker-compose.host.yml --env-file host.env exec"], timeout=120)
    assert "dood config OK: host 'gpu-b', Docker at tcp://dood-proxy:2375" in checked, checked
    reached = a.run(blocks["docker-compose exec -T airflow-triggerer"], timeout=120)
    assert f"gpu-b: OK at tcp://{a.substitutions['gpu-b.lan']}:2376 (dood-proxy of stack '{A_PROJECT}')" in reached
    assert "every host's queue has a live worker" in reached, reached
    print(f"docs/hosts.md: {len(RUN)} blocks run, {len(SKIPPED)} skipped, in {time.monotonic() - started:.0f}s")
