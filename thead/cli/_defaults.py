"""The defaults an options dataclass declares, read from its source without importing it.

``--help`` shows each option's default, which is the library's (``AnimateOptions().batch``,
...). Importing those modules pulls in torch (about 2 s), so ``thead --help`` and usage errors
would pay for it; reading the class body instead keeps them fast and keeps a single source of
truth. Only literal defaults are read (numbers, strings, tuples, None, ``Path("...")``); a
field whose default is an expression is left out (tests check every value the CLI uses against
the real dataclass).
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

_PACKAGE = Path(__file__).resolve().parents[1]  # thead/


def _value(node: ast.expr):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Path" and len(node.args) == 1:
        return Path(ast.literal_eval(node.args[0]))
    return ast.literal_eval(node)


def option_defaults(module: str, cls: str) -> SimpleNamespace:
    """``module.cls``'s literal field defaults (``module`` like "thead.animate")."""
    parts = module.split(".")[1:]
    source = _PACKAGE.joinpath(*parts[:-1], parts[-1] + ".py") if parts else _PACKAGE / "__init__.py"
    if not source.is_file():
        source = _PACKAGE.joinpath(*parts, "__init__.py")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            values = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                    try:
                        values[item.target.id] = _value(item.value)
                    except (ValueError, TypeError, SyntaxError):  # an expression: not shown
                        pass
            return SimpleNamespace(**values)
    raise LookupError(f"no class {cls} in {source}")
