"""The layers the code relies on, read from its own imports (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("zapreply", "webhook_app", "admin_api", "worker", "console_app")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Every module of ours and the modules of ours it imports, anywhere in its body."""
    graph: dict[str, set[str]] = {}
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    for path in files:
        name = _module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import module` names a module; `from module import name` not.
                targets = [f"{node.module}.{alias.name}" for alias in node.names
                           if f"{node.module}.{alias.name}" in modules] or [node.module]
            else:
                continue
            found.update(target for target in targets if target.split(".")[0] in PACKAGES)
        graph[name] = found
    return graph


GRAPH = _imports()


def _importers_of(prefix: str) -> dict[str, set[str]]:
    return {module: {t for t in targets if t == prefix or t.startswith(prefix + ".")}
            for module, targets in GRAPH.items()}


@pytest.mark.parametrize("boundary", ["zapreply.channel", "zapreply.llm", "zapreply.net"])
def test_the_boundaries_never_import_storage_the_rules_or_the_pipeline(boundary: str) -> None:
    forbidden = ("zapreply.storage", "zapreply.rules", "zapreply.replies", "zapreply.actions",
                 "zapreply.broker")
    offenders = {module: sorted(t for t in targets if t.startswith(forbidden))
                 for module, targets in GRAPH.items() if module.startswith(boundary)}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_storage_never_imports_the_layers_above_it() -> None:
    above = ("zapreply.rules", "zapreply.replies", "zapreply.actions", "zapreply.llm",
             "zapreply.channel", "zapreply.broker", "webhook_app", "worker")
    offenders = {module: sorted(t for t in targets if t.startswith(above))
                 for module, targets in GRAPH.items() if module.startswith("zapreply.storage")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_receiver_never_imports_the_reply_pipeline_or_the_llm_boundary() -> None:
    offenders = {module: sorted(t for t in targets
                                if t.startswith(("zapreply.replies", "zapreply.llm", "worker")))
                 for module, targets in GRAPH.items() if module.startswith("webhook_app")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_admin_api_never_imports_the_reply_pipeline_the_llm_or_the_worker() -> None:
    offenders = {module: sorted(t for t in targets
                                if t.startswith(("zapreply.replies", "zapreply.llm", "worker")))
                 for module, targets in GRAPH.items() if module.startswith("admin_api")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_receiver_never_imports_the_console() -> None:
    offenders = {module: sorted(t for t in targets if t.startswith("console_app"))
                 for module, targets in GRAPH.items() if module.startswith("webhook_app")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_console_never_imports_the_reply_pipeline_the_llm_or_the_worker() -> None:
    forbidden = ("zapreply.replies", "zapreply.llm", "zapreply.channel", "worker", "webhook_app")
    offenders = {module: sorted(t for t in targets if t.startswith(forbidden))
                 for module, targets in GRAPH.items() if module.startswith("console_app")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_nothing_but_the_console_imports_it() -> None:
    offenders = {module: sorted(t for t in targets if t.startswith("console_app"))
                 for module, targets in GRAPH.items() if not module.startswith("console_app")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_receiver_reaches_the_use_cases_only_through_the_admin_api() -> None:
    offenders = {module: sorted(t for t in targets if t.startswith("zapreply.actions"))
                 for module, targets in GRAPH.items() if module.startswith("webhook_app")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_actions_never_import_a_front_door_the_pipeline_or_the_llm() -> None:
    forbidden = ("zapreply.replies", "zapreply.llm", "zapreply.channel", "zapreply.cli",
                 "webhook_app", "admin_api", "worker")
    offenders = {module: sorted(t for t in targets if t.startswith(forbidden))
                 for module, targets in GRAPH.items() if module.startswith("zapreply.actions")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_metrics_import_nothing_of_ours() -> None:
    # Plumbing every layer counts into: the receiver, the pipeline and the console alike.
    offenders = {module: sorted(t for t in targets if not t.startswith("zapreply.metrics"))
                 for module, targets in GRAPH.items() if module.startswith("zapreply.metrics")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_there_is_no_import_circle() -> None:
    modules = {m for m in GRAPH if m.count(".") >= 1 or m in PACKAGES}
    circles = []
    for start in sorted(modules):
        # Depth-first from each module: a path back to it is a circle.
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for target in GRAPH.get(node, ()):
                if target == start and len(path) > 1:
                    circles.append(" -> ".join([*path, start]))
                elif target not in seen and target in GRAPH and target not in PACKAGES:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    assert circles == []


def test_a_running_receiver_loads_neither_litellm_nor_the_pipeline(base_env, tmp_path) -> None:
    script = (
        "import sys, webhook_app\n"
        "app = webhook_app.create_app()\n"
        "client = app.test_client()\n"
        "client.get('/healthz'); client.get('/readyz')\n"
        "client.post('/webhooks/wuzapi', data=b'{}', content_type='application/json')\n"
        "loaded = [m for m in sys.modules if m == 'litellm' or m.startswith(("
        "'zapreply.replies', 'zapreply.llm', 'worker', 'console_app'))]\n"
        "print(sorted(loaded))\n"
    )
    env = {**os.environ, **base_env, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_receiver_without_admin_token_loads_no_admin_code(base_env, tmp_path) -> None:
    script = (
        "import sys, webhook_app\n"
        "client = webhook_app.create_app({'ADMIN_TOKEN': ''}).test_client()\n"
        "assert client.get('/api/workflow-configs').status_code == 503\n"
        "client.post('/webhooks/wuzapi', data=b'{}', content_type='application/json')\n"
        "loaded = [m for m in sys.modules if m.startswith(('admin_api.views', 'zapreply.actions'))]\n"
        "print(sorted(loaded))\n"
    )
    env = {**os.environ, **base_env, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
