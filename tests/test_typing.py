"""The shipped type stub ``_core_c.pyi`` describes the extension it ships with.

mypy reads the stub, never the compiled module, so a name or parameter added
to ``_core_c.pyx`` (or to its pure twin) without the stub would go unnoticed
by type checkers.  The stub is read from the installed package, next to the
extension, so a wheel run checks the wheel's own pair.
"""

from __future__ import annotations

import ast
import inspect
import os
import types

import pytest

import asynframe

STUB = os.path.join(os.path.dirname(asynframe.__file__), "_core_c.pyi")
# dunders the stub declares on purpose; other underscored names are private
DUNDERS = {"__new__", "__len__", "__bool__"}


def _stub_tree():
    with open(STUB, encoding="utf-8") as f:
        return ast.parse(f.read(), STUB)


def _public(name):
    return not name.startswith("_") or name in DUNDERS


def stub_module_names():
    names = set()
    for node in _stub_tree().body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_")}


def stub_classes():
    """{class name: {member name: list of parameter names, or None for attributes}}."""
    classes = {}
    for node in _stub_tree().body:
        if not isinstance(node, ast.ClassDef):
            continue
        members = {}
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and _public(item.name):
                decorators = {ast.unparse(d) for d in item.decorator_list}
                is_property = "property" in decorators or any(d.endswith(".setter") for d in decorators)
                members[item.name] = None if is_property else [a.arg for a in item.args.args[1:]]
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                members[item.target.id] = None
        classes[node.name] = members
    return classes


def runtime_module_names(module):
    """Public names the module defines or exports (``__all__``), not what it imported for itself."""
    names = set(getattr(module, "__all__", ()))
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if isinstance(value, (int, str)) or getattr(value, "__module__", None) == module.__name__:
            names.add(name)
    return names


def runtime_members(cls):
    return {n for n in dir(cls) if not n.startswith("_")} | {n for n in DUNDERS - {"__new__"} if n in vars(cls)}


def parameters(func):
    try:
        signature = inspect.signature(func)
    except ValueError:
        # a C slot wrapper (__len__, __bool__) carries no text signature on
        # some builds (free-threaded 3.13); its parameters are fixed by the slot
        if isinstance(func, types.WrapperDescriptorType):
            return SLOT_PARAMETERS[func.__name__]
        raise
    return [p for p in signature.parameters if p not in ("self", "cls")]


SLOT_PARAMETERS = {"__len__": [], "__bool__": [], "__repr__": [], "__iter__": []}


def test_stub_is_shipped_next_to_the_package():
    assert os.path.isfile(STUB), STUB
    assert os.path.isfile(os.path.join(os.path.dirname(STUB), "py.typed"))


def test_module_names_agree(both_cores):
    compiled, pure = both_cores
    stub = stub_module_names()
    assert runtime_module_names(compiled) == stub, "the stub and _core_c differ"
    assert runtime_module_names(pure) == stub, "the stub and _core_py differ"


@pytest.mark.parametrize("name", ["FrameScanner", "PushQueue"])
def test_class_members_agree(both_cores, name):
    compiled, pure = both_cores
    members = stub_classes()[name]
    declared = set(members) - {"__new__"}
    assert runtime_members(getattr(compiled, name)) == declared, "the stub and _core_c differ"
    assert runtime_members(getattr(pure, name)) == declared, "the stub and _core_py differ"


@pytest.mark.parametrize("name", ["FrameScanner", "PushQueue"])
def test_parameters_agree(both_cores, name):
    compiled, pure = both_cores
    checked = 0
    for member, params in stub_classes()[name].items():
        if params is None:
            continue
        if member == "__new__":
            # the compiled class takes these in __cinit__, which has no
            # introspectable signature; the pure twin takes them in __init__
            assert parameters(getattr(pure, name).__init__) == params, member
            continue
        assert parameters(getattr(getattr(pure, name), member)) == params, member
        assert parameters(getattr(getattr(compiled, name), member)) == params, member
        checked += 1
    assert checked >= 5


def test_function_parameters_agree(both_cores):
    compiled, pure = both_cores
    for node in _stub_tree().body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            params = [a.arg for a in node.args.args]
            assert parameters(getattr(pure, node.name)) == params, node.name
            assert parameters(getattr(compiled, node.name)) == params, node.name
