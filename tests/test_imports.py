"""No module borrows another module's private helper. A private name (one leading underscore,
not a dunder) is its module's business: when two modules need it, it gets a public name in one
home instead of being imported privately (copies of such helpers drifted apart before).

Checked statically over every module of drdo_ray/ and jobs/, imports inside functions included:
- ``from M import _name`` where M is another module of the project (a package's ``__init__``
  re-exporting from its own submodules is fine);
- ``M._name`` where M was imported as a project module;
- importing a private module (``_bootstrap``) from outside the package that holds it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("drdo_ray", "jobs")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for top in SCANNED for p in sorted((ROOT / top).rglob("*.py"))}


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, module: str, path: Path, known: dict[str, Path]) -> str | None:
    """The imported module's dotted name, when it belongs to the project."""
    if node.level:
        base = _package(module, path).split(".")
        base = base[: len(base) - (node.level - 1)]
        name = ".".join([*base, *([node.module] if node.module else [])])
    else:
        name = node.module or ""
        if name not in known and f"jobs.{name}" in known and module.startswith("jobs."):
            name = f"jobs.{name}"  # jobs/ scripts import their siblings as top-level modules
    return name if name in known or name.split(".")[0] in SCANNED else None


def _private_module_outside(target: str, importer_package: str) -> bool:
    """``target`` has a private component whose package is not the importer's (or above it)."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            owner = ".".join(parts[:i])
            return not (importer_package == owner or importer_package.startswith(owner + "."))
    return False


def violations(path: Path, known: dict[str, Path]) -> list[str]:
    module = _module_name(path)
    package = _package(module, path)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    project_aliases: set[str] = set()  # local names bound to project modules
    where = f"{path.relative_to(ROOT)}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(node, module, path, known)
            if target is None:
                continue
            if _private_module_outside(target, package):
                found.append(f"{where}:{node.lineno}: imports private module {target}")
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in known:
                    project_aliases.add(alias.asname or alias.name)
                    if _private(alias.name) and _private_module_outside(submodule, package):
                        found.append(f"{where}:{node.lineno}: imports private module {submodule}")
                    continue
                own_reexport = path.name == "__init__.py" and target.startswith(module + ".")
                if _private(alias.name) and target != module and not own_reexport:
                    found.append(f"{where}:{node.lineno}: imports {alias.name} from {target}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                if module.startswith("jobs.") and f"jobs.{target}" in known:
                    target = f"jobs.{target}"
                if target in known or target.split(".")[0] in SCANNED:
                    if _private_module_outside(target, package):
                        found.append(f"{where}:{node.lineno}: imports private module {target}")
                    project_aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in project_aliases
        ):
            found.append(f"{where}:{node.lineno}: uses {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names():
    known = _modules()
    found = [v for path in known.values() for v in violations(path, known)]
    assert not found, "private names borrowed across modules:\n" + "\n".join(found)


def test_the_check_finds_each_kind_of_borrowing(tmp_path, monkeypatch):
    """The rule itself: each kind of borrowing is caught, the allowed forms are not."""
    package = tmp_path / "drdo_ray"
    (package / "sub").mkdir(parents=True)
    files = {
        "drdo_ray/__init__.py": "",
        "drdo_ray/home.py": "def _helper(): ...\ndef public(): ...\n_CONST = 1\n",
        "drdo_ray/sub/__init__.py": "from ._impl import _thing\n",
        "drdo_ray/sub/_impl.py": "_thing = 1\n",
        "drdo_ray/sub/user.py": "from ._impl import x\nfrom .. import home\nhome._helper()\n",
        "drdo_ray/borrower.py": "from .home import _helper, public\n\ndef f():\n    from drdo_ray.home import _CONST\n",
        "drdo_ray/reacher.py": "from .sub._impl import x\n",
        "drdo_ray/fine.py": "from __future__ import annotations\nfrom .home import public\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    known = {_module_name(p): p for p in sorted(package.rglob("*.py"))}
    result = {name: violations(tmp_path / name, known) for name in files}
    assert result["drdo_ray/__init__.py"] == [] and result["drdo_ray/fine.py"] == []
    assert result["drdo_ray/sub/__init__.py"] == []  # a package re-exporting its own submodule
    assert len(result["drdo_ray/borrower.py"]) == 2  # module level and inside a function
    assert any("imports private module" in v for v in result["drdo_ray/reacher.py"])
    # a sibling's private module inside its own package is fine; module._name is not
    assert result["drdo_ray/sub/user.py"] == ["drdo_ray/sub/user.py:3: uses home._helper"]
