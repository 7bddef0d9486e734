"""metabook's modules stand on floors: each imports only from its own floor or those below, and no import circles.

The floors, bottom to top (CONTRIBUTING.md, issue 13): files, errors, the runtime, checkpoints, models and
data; the inner loop; the methods; training, evaluation and what builds on them; the command line. The
imports are read from the source with ``ast``, those inside functions included (a lazy import is still a
dependency); imports under ``if TYPE_CHECKING:`` are for annotations only and are left out, and so is the
package itself (``metabook_learn/__init__.py``, the facade, which may name any floor).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "metabook_learn"
FLOORS = [
    {"metabook_learn.files", "metabook_learn.errors", "metabook_learn.runtime", "metabook_learn.checkpoint", "metabook_learn.models",
     "metabook_learn.widgets", "metabook_learn.data", "metabook_learn.validation", "metabook_learn.rl_envs"},
    {"metabook_learn.inner_loop", "metabook_learn.stacked", "metabook_learn.policy_gradient"},
    {"metabook_learn.methods", "metabook_learn.episodic", "metabook_learn.maml", "metabook_learn.reptile", "metabook_learn.protonets",
     "metabook_learn.r2d2", "metabook_learn.neural_processes", "metabook_learn.mldg", "metabook_learn.protomaml",
     "metabook_learn.joint_training", "metabook_learn.pretrain_finetune", "metabook_learn.in_context", "metabook_learn.bandit_baselines", "metabook_learn.rl2",
     "metabook_learn.maml_rl"},
    {"metabook_learn.training", "metabook_learn.evaluation", "metabook_learn.pretrained", "metabook_learn.setups", "metabook_learn.report"},
    {"metabook_learn.cli", "metabook_learn.cli_options", "metabook_learn.train_cli", "metabook_learn.data_cli", "metabook_learn.report_cli",
     "metabook_learn.run_length", "metabook_learn.__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int:
    for number, floor in enumerate(FLOORS):
        if any(module == name or module.startswith(name + ".") for name in floor):
            return number
    raise AssertionError(f"{module} is on no floor: add it to FLOORS in {Path(__file__).name}")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> set[str]:
    """The metabook modules ``path`` imports (``from metabook_learn.x import y`` counts as metabook_learn.x, or metabook_learn.x.y
    when that is a module)."""
    found = set()

    def visit(node):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("metabook_learn"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metabook_learn"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                    PACKAGE.parent / Path(*candidate.split(".")) / "__init__.py").exists()
                found.add(candidate if is_module else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name != "metabook_learn"}


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))
            if module_name(path) != "metabook_learn"}


def test_every_module_is_on_a_floor_and_imports_nothing_from_a_higher_one():
    upward = [f"{module} (floor {floor_of(module)}) imports {imported} (floor {floor_of(imported)})"
              for module, imported_modules in graph().items() for imported in sorted(imported_modules)
              if floor_of(imported) > floor_of(module)]
    assert not upward, "\n".join(upward)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules, or ``None``: depth-first search for a back edge."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_there_is_no_import_circle():
    # A package depends on its __init__ and the __init__ on what it imports: fold each sub-package into one node.
    def node(name):
        return "metabook_learn.data" if name.startswith("metabook_learn.data.") else name

    edges = {}
    for module, imported in graph().items():
        edges.setdefault(node(module), set()).update(node(i) for i in imported if node(i) != node(module))
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("edges, circle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
])
def test_the_circle_search_finds_circles_and_only_them(edges, circle):
    assert (find_cycle(edges) is not None) == circle
