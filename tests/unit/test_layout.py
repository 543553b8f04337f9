"""The package layout holds: no import cycle, imports flow one way down the layers, no stray top-level module,
the public names resolve, and every module is named in docs/architecture.md or in its package's docstring.

The graph is built from the source (AST), not by importing: module-level imports only, `if TYPE_CHECKING:`
blocks included (a cycle through typing is still a cycle a reader has to untangle); imports inside functions
are deliberate deferrals and are not counted.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
ARCHITECTURE = REPO / "docs" / "architecture.md"

#: The layers, lowest first: a module may import only from its own layer or a lower one. The longest prefix wins.
LAYERS: dict[str, int] = {
    "dood.exceptions": 0,  # plain errors, no Airflow
    "dood.naming": 0,  # a container's identity: name and labels, read by every process
    "dood.policy": 0,  # the pure check of a create body, shared by the operator and the proxy
    "dood.config": 1,  # the typed config
    "dood.engine": 2,  # reaching a Docker engine
    "dood.mounts": 2,  # bind sources: the mount map, their safety, the directories made for a container
    "dood.hooks": 3,  # Airflow's hook: the connection for task code, the triggers' session
    "dood.gpus": 4,  # GPU claims through the engine
    "dood.lifecycle": 4,  # one container's life
    "dood.hosts": 5,  # several Docker hosts: placement at run time (`python -m dood.hosts`)
    "dood.operators": 6,  # Airflow's roles
    "dood.sensors": 6,
    "dood.triggers": 6,
    "dood.dag_factory": 7,  # pipelines as DAGs, built from the operators
    "dood.janitor": 7,  # dood-janitor
    "dood.proxy": 8,  # processes of their own (the proxy also has its own rule, below)
    "dood.ui": 8,
    # the operator's "Container" button: its classpath is in every serialized DAG and the provider info, and
    # the api-server imports it without the operator, so it stays in dood.ui, importing only the URLs
    "dood.ui.extra_link": 6,
    "dood.ui.links": 6,
    "dood.plugin": 9,  # entry points
    "dood.get_provider_info": 9,
    "dood": 9,
}

#: Top-level modules: entry points and public names only; everything else lives in a package.
TOP_LEVEL = {"exceptions", "naming", "hosts", "dag_factory", "janitor", "plugin", "get_provider_info"}

#: dood-proxy holds the raw socket: it loads nothing of Airflow's roles, the task-side lifecycle or the UI.
PROXY_NEVER_LOADS = (
    "dood.hooks",
    "dood.operators",
    "dood.sensors",
    "dood.triggers",
    "dood.ui",
    "dood.dag_factory",
    "dood.janitor",
    "dood.hosts",
    "dood.lifecycle.launch",
    "dood.lifecycle.completion",
    "dood.lifecycle.teardown",
)


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_name(p): p for p in sorted((SRC / "dood").rglob("*.py"))}


def _statements(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` and other module-level conditions
            yield from _statements(node.body)
            yield from _statements(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _statements(node.body)
            for handler in node.handlers:
                yield from _statements(handler.body)


@cache
def graph() -> dict[str, frozenset[str]]:
    known = modules()
    edges = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _statements(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:  # `from dood.x import module` depends on that module, not on dood.x
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        # every import of a dood module loads the `dood` package first: that edge is not a dependency
        edges[name] = frozenset(t for t in targets if t in known and t not in (name, "dood"))
    return edges


def layer(name: str) -> int | None:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    return None


def test_no_import_cycle():
    edges, state, stack, cycles = graph(), {}, [], []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles (module level, TYPE_CHECKING included):\n" + "\n".join(cycles)


def test_every_module_has_a_layer_and_imports_only_down():
    unplaced = [name for name in modules() if layer(name) is None]
    assert not unplaced, f"modules in no layer (add their package to LAYERS in {__file__}): {unplaced}"
    upward = [
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, targets in sorted(graph().items())
        for target in sorted(targets)
        if layer(target) > layer(source)
    ]
    assert not upward, "imports that run back up the layers:\n" + "\n".join(upward)


def test_top_level_modules_are_entry_points_or_public_names():
    top = {p.stem for p in (SRC / "dood").glob("*.py")} - {"__init__"}
    assert top <= TOP_LEVEL, f"top-level modules that belong in a package: {sorted(top - TOP_LEVEL)}"


def test_the_proxy_loads_no_task_side_module():
    edges, seen, todo = graph(), set(), [m for m in modules() if m.startswith("dood.proxy")]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges[node])
    loaded = sorted(m for m in seen if m.startswith(PROXY_NEVER_LOADS))
    assert not loaded, f"dood.proxy's imports load {loaded}"


def test_public_names_resolve_and_all_is_explicit():
    import dood

    assert sorted(dood.__all__) == sorted([*dood._PUBLIC, "__version__"])
    for name in dood._PUBLIC:
        assert getattr(dood, name).__name__ == name
    assert (SRC / "dood" / "py.typed").is_file(), "py.typed: a DAG author's type checker sees dood's types"


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def _modules_named(text: str) -> set[str]:
    """The modules a text names: dotted (`dood.gpus.claims`, `dood.gpus.claims.GpuClaims`) or as a path
    (`src/dood/gpus/claims.py`, `gpus/`): each token counts for the longest module it starts with."""
    known, named = modules(), set()
    tokens = re.findall(r"\bdood(?:\.\w+)+", text)
    tokens += [
        p.replace("/", ".").removesuffix(".py").rstrip(".") for p in re.findall(r"\bdood/[\w/]+(?:\.py|/)", text)
    ]
    for token in tokens:
        parts = token.split(".")
        for n in range(len(parts), 1, -1):
            if ".".join(parts[:n]) in known:
                named.add(".".join(parts[:n]))
                break
    return named


@pytest.mark.parametrize("name", sorted(m for m in modules() if m != "dood"))
def test_every_module_is_named_in_the_architecture_or_its_package_docstring(name):
    """docs/architecture.md names each package and each top-level module; each package's docstring (its module
    map) names its modules. A module added without a word about it fails here."""
    in_architecture = _modules_named(ARCHITECTURE.read_text())
    if name in in_architecture:
        return
    package, _, leaf = name.rpartition(".")
    if package == "dood" or modules()[name].name == "__init__.py":
        pytest.fail(f"{name} is not named in docs/architecture.md (say what it owns, and where it sits)")
    if leaf == "__main__":
        return  # `python -m <package>`: the package's own entry
    if package not in in_architecture:
        pytest.fail(f"{name}: its package {package} is not named in docs/architecture.md")
    map_ = _docstring(modules()[package])
    if not (re.search(rf"`{re.escape(leaf)}`", map_) or name in _modules_named(map_)):
        pytest.fail(
            f"{name} is named neither in docs/architecture.md nor in {package}'s docstring (its module map): "
            "say in one line what it owns"
        )
