"""The house rules of ``bigkeras/``, checked on its source (README "Architecture").

- No import cycle between bigkeras modules, counting imports inside functions too
  (``LAZY_CYCLES`` lists the one deliberate lazy import that closes a cycle, and why).
- Layers (``FORBIDDEN``): ``layers`` and ``models`` never import ``training``, ``serving`` or
  ``checkpoints``; ``serving`` never imports ``training``; ``training`` never imports ``serving``.
- Private TensorFlow, Keras and keras-hub APIs only in ``bigkeras/private_apis.py`` (``ALLOWED_PRIVATE``):
  no other module reads another object's ``_name`` or imports ``tensorflow.python``/``keras.src``.
- Every function under ``MAX_FUNCTION_LINES`` lines of code (docstring, comments and blank
  lines excluded).
"""

import ast
import io
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bigkeras"
MAX_FUNCTION_LINES = 80  # a function must stay under this
FORBIDDEN = {  # package -> the packages it must never import (at any level, lazily included)
    "bigkeras.layers": ("bigkeras.models", "bigkeras.training", "bigkeras.serving", "bigkeras.checkpoints"),
    "bigkeras.models": ("bigkeras.training", "bigkeras.serving", "bigkeras.checkpoints", "bigkeras.data"),
    "bigkeras.data": ("bigkeras.models", "bigkeras.training", "bigkeras.serving", "bigkeras.checkpoints"),
    "bigkeras.generation": ("bigkeras.training", "bigkeras.serving", "bigkeras.checkpoints"),
    "bigkeras.checkpoints": ("bigkeras.training", "bigkeras.serving"),
    "bigkeras.serving": ("bigkeras.training", "bigkeras.checkpoints"),
    "bigkeras.training": ("bigkeras.serving", "bigkeras.checkpoints"),
}

# Imports inside a function that close a cycle on purpose: (importer, imported) -> why.
LAZY_CYCLES = {
    ("bigkeras.registry", "bigkeras.models"): "the registry imports every family on first use, so registration never "
                                              "depends on import order (DESIGN.md 3); each family imports the "
                                              "registry at module level to register itself",
}

# Modules allowed to touch other libraries' private names: private_apis, and the verify child,
# which must not import bigkeras (private_apis checks its one private import).
ALLOWED_PRIVATE = {"bigkeras.private_apis", "bigkeras.serving.verify_child"}


def _modules():
    """``{dotted module name: parsed source}`` for every module in ``bigkeras/``."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = (path, ast.parse(path.read_text(), filename=str(path)))
    return found


def _imported(node, module, modules):
    """The bigkeras modules one import statement in ``module`` names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    if not isinstance(node, ast.ImportFrom):
        return set()
    package = module if modules[module][0].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    base = node.module if node.level == 0 else ".".join(p for p in (package, node.module) if p)
    targets = set()
    for alias in node.names:  # `from pkg import submodule` names the submodule, else pkg itself
        name = f"{base}.{alias.name}"
        targets.add(name if name in modules else base)
    return {t for t in targets if t in modules}


def _module_level_statements(tree):
    """Top-level statements, looking into module-level if/try blocks but not into functions or classes."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            stack.extend(getattr(node, "body", []) + getattr(node, "orelse", []) + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                stack.extend(handler.body)


def _import_graph(modules, *, module_level_only):
    graph = {}
    for name, (_, tree) in modules.items():
        nodes = _module_level_statements(tree) if module_level_only else ast.walk(tree)
        graph[name] = set().union(*(_imported(node, name, modules) for node in nodes)) - {name}
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def _code_lines(source_lines, function):
    """Lines of code in ``function``: its span less docstring, comments and blank lines."""
    body = function.body
    skip = set()
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        skip = set(range(body[0].lineno, body[0].end_lineno + 1))
    text = "".join(source_lines[function.lineno - 1:function.end_lineno])
    comments = {tok.start[0] + function.lineno - 1 for tok in tokenize.generate_tokens(io.StringIO(text).readline)
                if tok.type == tokenize.COMMENT and tok.line.strip().startswith("#")}
    return sum(1 for n in range(function.lineno, function.end_lineno + 1)
               if n not in skip and n not in comments and source_lines[n - 1].strip())


def test_no_module_level_import_cycle_in_bigkeras():
    cycle = _cycle(_import_graph(_modules(), module_level_only=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_through_function_level_imports_either():
    modules = _modules()
    graph = _import_graph(modules, module_level_only=False)
    module_level = _import_graph(modules, module_level_only=True)
    for (importer, imported), why in LAZY_CYCLES.items():  # each still lazy and still needed, or drop it
        assert imported in graph[importer] and imported not in module_level[importer], (importer, imported, why)
        graph[importer] = graph[importer] - {imported}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle (imports inside functions included): " + " -> ".join(cycle)


def test_function_level_imports_count_in_the_graph():
    source = "def f():\n    from bigkeras.checkpoints import huggingface\n"
    modules = {"bigkeras.checkpoints.t5": (PACKAGE / "checkpoints" / "t5.py", ast.parse(source)),
               "bigkeras.checkpoints.huggingface": (PACKAGE / "checkpoints" / "huggingface.py", ast.parse(""))}
    assert _import_graph(modules, module_level_only=False)["bigkeras.checkpoints.t5"] == {
        "bigkeras.checkpoints.huggingface"}
    assert _import_graph(modules, module_level_only=True)["bigkeras.checkpoints.t5"] == set()


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _violations(graph):
    return [f"{module} imports {target}" for module, targets in sorted(graph.items()) for target in sorted(targets)
            for package, forbidden in FORBIDDEN.items()
            if (module == package or module.startswith(package + ".")) and target.startswith(forbidden)]


def test_packages_import_only_the_layers_below_them():
    broken = _violations(_import_graph(_modules(), module_level_only=False))
    assert not broken, "\n".join(broken)
    assert _violations({"bigkeras.models.gpt": {"bigkeras.serving.export", "bigkeras.layers"}}) == [
        "bigkeras.models.gpt imports bigkeras.serving.export"
    ]


def test_no_function_in_bigkeras_is_longer_than_the_limit():
    lengths = []
    for name, (path, tree) in _modules().items():
        lines = path.read_text().splitlines(keepends=True)
        lengths += [(_code_lines(lines, node), f"{name}.{node.name} (line {node.lineno})") for node in ast.walk(tree)
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    longest = max(lengths)
    assert longest[0] < MAX_FUNCTION_LINES, f"{longest[1]}: {longest[0]} lines of code"
    assert len(lengths) > 500  # the walk saw the package


def test_no_module_outside_private_apis_reaches_into_private_names():
    offenders = []
    for name, (_, tree) in _modules().items():
        if name in ALLOWED_PRIVATE:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    offenders.append(f"{name}:{node.lineno} .{node.attr}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                offenders += [f"{name}:{node.lineno} import {n}" for n in names
                              if n.startswith(("tensorflow.python", "keras.src"))]
    assert not offenders, "private APIs belong in bigkeras/private_apis.py:\n" + "\n".join(offenders)
