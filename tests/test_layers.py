"""The package's shape: every import points one way, down the layers, and none hides inside a function.

    commands   cli/*, train, sample, fid, ship, exercises    argument parsing, provenance, the maintainer's tools
    models     models, generate                    "your own run, else the shipped one", any checkpoint by kind
    chapters   unet, losses, training, samplers, autoencoder, latent, classifier, metrics, class_mix, costs,
               plotting, widgets, prompts, text, guidance, checking, checkers       one concept each
    base       settings, schedules, forward, data, runtime, timing, interrupts, checkpoints, toy

A module may import its own layer and the layers below it, never above, and the imports between the
package's modules must form no cycle.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "diffusion_lesson"
LAYERS = {
    "base": {"settings", "schedules", "forward", "data", "runtime", "timing", "interrupts", "checkpoints", "toy"},
    "chapters": {"unet", "losses", "training", "samplers", "autoencoder", "latent", "classifier", "metrics", "costs",
                 "plotting", "widgets", "prompts", "text", "guidance", "class_mix",
                 "checking", "checkers"},
    "models": {"models", "generate"},
    "commands": {"train", "sample", "fid", "ship", "exercises"},
}  # fmt: skip
RANK = {"base": 0, "chapters": 1, "models": 2, "commands": 3}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts)


def layer_of(module: str) -> str:
    if module.startswith("cli"):
        return "commands"
    for layer, members in LAYERS.items():
        if module in members:
            return layer
    raise AssertionError(f"diffusion_lesson/{module}.py belongs to no layer: add it to LAYERS in {__file__}")


def package_imports(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """(imported package module, node) for every import of diffusion_lesson.* anywhere in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffusion_lesson"):
            base = node.module.removeprefix("diffusion_lesson").lstrip(".")
            names = [base] if base else [alias.name for alias in node.names]  # "from diffusion_lesson import x"
            found += [(name, node) for name in names]
        elif isinstance(node, ast.Import):
            found += [(a.name.removeprefix("diffusion_lesson."), node) for a in node.names
                      if a.name.startswith("diffusion_lesson.")]  # fmt: skip
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    graph = {}
    for path in sorted(root.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        graph[module_name(path, root)] = {name for name, _ in package_imports(ast.parse(path.read_text()))}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules that import each other in a ring, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def test_every_module_has_a_layer_and_imports_only_its_own_layer_or_below():
    upward = []
    for module, imported in import_graph().items():
        for other in imported:
            if RANK[layer_of(other)] > RANK[layer_of(module)]:
                upward.append(f"{module} ({layer_of(module)}) imports {other} ({layer_of(other)})")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_no_package_import_inside_a_function():
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            hidden += [f"{module_name(path)}.{function.name} imports {name}" for name, _ in package_imports(function)]
    assert not hidden, "imports hidden in functions (a cycle dodged?):\n" + "\n".join(hidden)


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path):
    """The walker itself can fail: a made-up package with a ring and an upward import."""
    (tmp_path / "schedules.py").write_text("from diffusion_lesson.models import load_model\n")
    (tmp_path / "models.py").write_text("import diffusion_lesson.schedules\n")
    graph = import_graph(tmp_path)
    assert graph == {"schedules": {"models"}, "models": {"schedules"}}
    assert set(find_cycle(graph)) == {"schedules", "models"}
    assert RANK[layer_of("models")] > RANK[layer_of("schedules")]
    with pytest.raises(AssertionError, match="belongs to no layer"):
        layer_of("helpers")
