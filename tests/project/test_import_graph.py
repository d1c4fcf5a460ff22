"""No import circles among lite_serving's modules: the packages form layers.

Read from the source (nothing is imported): an edge is an ``import`` that runs
when its module is imported, i.e. at module level or in a class body, inside
``if``/``try`` blocks too. Imports inside functions are deliberate and lazy:
they run after every module is loaded, so they are not edges. Importing
``lite_serving.a.b`` also loads the packages above it; those are Python's own
order, not edges either.
"""

import ast
import os

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "lite_serving")


def modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    root = os.path.dirname(PACKAGE_DIR)
    for directory, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _load_time_imports(body):
    """The Import/ImportFrom nodes that run when ``body`` (a module's or a class's) runs."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    yield from _load_time_imports(inner)


def edges(name, path, known):
    """The lite_serving modules ``name`` imports as it loads."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    out = set()
    for node in _load_time_imports(tree.body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                parts = parts[:len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([base] if base else []))
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name``, mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        out.update(t for t in targets if t in known and t != name)
    return out


def cycles(graph):
    """Every circle of ``graph`` ({node: set of nodes}), each found once, as a list of nodes."""
    found, seen = [], set()

    def visit(node, path, on_path):
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                circle = path[path.index(nxt):]
                key = frozenset(circle)
                if key not in seen:
                    seen.add(key)
                    found.append(circle + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt], on_path | {nxt})
        done.add(node)

    done = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], {start})
    return found


def test_the_graph_is_read_from_the_source():
    known = modules()
    assert "lite_serving.app.routes" in known and "lite_serving.http.replies" in known
    graph = {name: edges(name, path, known) for name, path in known.items()}
    # a module-level import is an edge, a function-level one is not
    assert "lite_serving.http.replies" in graph["lite_serving.server.connection"]
    assert "lite_serving.app.dev_page" not in graph["lite_serving.app.routes"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_circles():
    known = modules()
    graph = {name: edges(name, path, known) for name, path in known.items()}
    assert cycles(graph) == []


def test_the_io_layer_does_not_import_the_application():
    """lite_serving.server (sockets, connections, dispatch) imports no lite_serving.app module
    as it loads: the application is handed to it."""
    known = modules()
    for name, path in known.items():
        if name.startswith("lite_serving.server."):
            app = {m for m in edges(name, path, known) if m.startswith("lite_serving.app")}
            assert not app, (name, app)
