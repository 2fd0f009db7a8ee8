"""docs/api/ describes the modules as they are.

Each page names the module(s) it documents (``<!-- api-modules: ... -->``).
Every heading of the form ``name`` or ``name(params)`` must name an object of
each of those modules, with exactly those parameter names; and every public
class, function and method the modules define must have a heading, so a
rename or a new method without documentation fails here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
from pathlib import Path

import pytest

from support import NO_EXTENSIONS, REQUIRE_EXTENSIONS

API_DIR = Path(__file__).resolve().parent.parent / "docs" / "api"
HEADING = re.compile(r"^#{2,4} `([A-Za-z_][\w.]*)(\((.*)\))?`\s*$", re.M)
MODULES = re.compile(r"<!-- api-modules: ([\w. ]+) -->")
POSIX_ONLY = re.compile(r"<!-- posix-only: ([\w. ]+) -->")

pytestmark = pytest.mark.skipif(not API_DIR.is_dir(), reason="docs/api/ is not next to tests/ here")


def pages():
    if not API_DIR.is_dir():
        return []
    return sorted(p.name for p in API_DIR.glob("*.md") if p.name != "README.md")


def load_modules(text):
    found = MODULES.search(text)
    assert found, "page does not say which module it documents"
    modules = []
    for name in found.group(1).split():
        if name == "asynframe._core_c" and NO_EXTENSIONS:
            continue
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            if name != "asynframe._core_c" or REQUIRE_EXTENSIONS:
                raise
    assert modules
    return modules


def documented(text):
    """[(dotted name, parameter names or None)] from the page's headings."""
    entries = []
    found = POSIX_ONLY.search(text)
    absent = set(found.group(1).split()) if found and os.name != "posix" else set()
    for name, has_params, params in HEADING.findall(text):
        if name.split(".")[0] in absent:
            continue
        names = None
        if has_params:
            args = ast.parse("def _(%s): pass" % params).body[0].args
            names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
            names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
        entries.append((name, names))
    return entries


def resolve(module, dotted):
    obj = module
    for part in dotted.split("."):
        obj = inspect.getattr_static(obj, part) if inspect.isclass(obj) else getattr(obj, part)
    return obj


def parameter_names(obj):
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    return [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]


def public_definitions(module):
    """Classes and functions the module defines or exports, with their own public members."""
    exported = set(getattr(module, "__all__", ()))
    names = set(exported)
    for name, value in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(value) or callable(value)):
            continue
        # a class the module exports is its API even when defined elsewhere
        # (the pure core's classes live in modules of their own)
        if getattr(value, "__module__", None) != module.__name__ and name not in exported:
            continue
        names.add(name)
        if inspect.isclass(value):
            for member, attr in vars(value).items():
                if member.startswith("_"):
                    continue
                if (
                    callable(attr)
                    or isinstance(attr, (property, staticmethod, classmethod))
                    or type(attr).__name__ in ("getset_descriptor", "member_descriptor")
                ):
                    names.add("%s.%s" % (name, member))
    return names


def test_there_are_pages():
    assert {"asynframe.md", "asyncore.md", "asynchat.md", "aio.md", "core.md"} <= set(pages())


@pytest.mark.parametrize("page", pages())
def test_documented_names_exist_with_their_parameters(page):
    text = (API_DIR / page).read_text(encoding="utf-8")
    entries = documented(text)
    assert entries, "no API headings on " + page
    for module in load_modules(text):
        for name, params in entries:
            try:
                obj = resolve(module, name)
            except AttributeError:
                pytest.fail("%s documents %s, which %s does not have" % (page, name, module.__name__))
            if params is None:
                continue
            if inspect.isclass(obj) and obj.__init__ is object.__init__:
                continue  # a compiled class set up in __cinit__; its pure twin is checked
            actual = parameter_names(obj.__init__ if inspect.isclass(obj) else obj)
            assert actual == params, "%s: %s.%s takes %s, documented as %s" % (
                page,
                module.__name__,
                name,
                actual,
                params,
            )


@pytest.mark.parametrize("page", pages())
def test_every_public_definition_is_documented(page):
    text = (API_DIR / page).read_text(encoding="utf-8")
    names = {name for name, _ in documented(text)}
    for module in load_modules(text):
        missing = sorted(public_definitions(module) - names)
        assert not missing, "%s does not document %s of %s" % (page, missing, module.__name__)


def test_readme_links_the_pages():
    index = (API_DIR / "README.md").read_text(encoding="utf-8")
    for page in pages():
        assert "(%s)" % page in index, page
    readme = API_DIR.parent.parent / "README.md"
    if readme.is_file():  # not copied next to the tests of an installed wheel
        assert "docs/api/" in readme.read_text(encoding="utf-8")


def test_readme_links_resolve():
    readme = API_DIR.parent.parent / "README.md"
    if not (readme.parent / ".git").exists():
        # the installed wheel's tests run from a copy without LICENSE, .github...
        pytest.skip("not a checkout: README.md's link targets are not all here")
    text = readme.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    missing = [
        target
        for target in targets
        if not target.startswith(("http://", "https://", "#", "mailto:"))
        and not (readme.parent / target.split("#", 1)[0]).exists()
    ]
    assert not missing, missing
