"""CPython's own asyncore/asynchat-based suites, run on asynframe.

``test_asyncore`` and ``test_asynchat`` test the modules themselves;
``test_smtpd``, ``test_poplib``, ``test_ftplib`` and ``test_smtplib`` run the
stdlib's smtplib, poplib and ftplib clients against asynchat servers (smtpd,
and the suites' own POP3/FTP servers with STLS, AUTH TLS, PASV...).  They are
imported from the running interpreter's ``test`` package at test time (never
copied here), with ``asynframe.asyncore``/``asynchat`` registered in
``sys.modules`` as ``asyncore``/``asynchat`` before they load.  Each run is
a fresh subprocess: one per core (``core`` fixture from conftest: compiled,
then pure via ``ASYNFRAME_NO_EXTENSIONS=1``), plus one with the stdlib
modules themselves, which gives the reference counts.  All three are started
at once and waited for by the tests.

Asserted per core and per suite: no failures, no errors, and as many tests
run and skipped as the stdlib modules give on this interpreter.

Python 3.12 removed the modules, ``smtpd`` and the 3.11 versions of these
suites.  There the suites' files (and ``smtpd.py``) are taken from an
installed 3.11 interpreter (``ASYNFRAME_CPYTHON_SUITES_DIR`` names its
``test`` directory, or pyenv's versions are searched) and run on this
interpreter's ``test.support``; the reference counts then come from the
``pyasyncore``/``pyasynchat`` backports.  Without any copy the tests skip,
or fail when ``ASYNFRAME_REQUIRE_CPYTHON_SUITES=1`` is set (CI, which must
not go green without them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from support import NO_EXTENSIONS

# test_ftplib before test_poplib, which imports its SSLConnection
SUITES = (
    "test.test_asyncore",
    "test.test_asynchat",
    "test.test_smtpd",
    "test.test_ftplib",
    "test.test_poplib",
    "test.test_smtplib",
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRE = os.environ.get("ASYNFRAME_REQUIRE_CPYTHON_SUITES", "") not in ("", "0")
TIMEOUT = 420

RUNNER = r"""
import importlib.util, json, os, sys, unittest, io, warnings
impl = sys.argv[1]
source = sys.argv[2]
names = sys.argv[3:]
if impl == "asynframe":
    import asynframe
    from asynframe import asynchat, asyncore
    sys.modules["asyncore"] = asyncore
    sys.modules["asynchat"] = asynchat
    core = asynframe.CORE_IMPLEMENTATION
else:
    core = "stdlib"


def load_by_path(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if source != "-" and importlib.util.find_spec("smtpd") is None:
    # 3.12+: the 3.11 smtpd.py sits beside its test directory.  It calls
    # warnings._deprecated(remove=(3, 12)), which raises from 3.12 on.
    deprecated = warnings._deprecated
    warnings._deprecated = lambda *args, **kwargs: None
    try:
        load_by_path("smtpd", os.path.join(os.path.dirname(source), "smtpd.py"))
    finally:
        warnings._deprecated = deprecated
if source != "-":
    # 3.12+: the suites of an installed 3.11 interpreter, loaded by path (all
    # of them first: one imports from another, which must not be this
    # interpreter's own version) and run on this interpreter's test.support
    for name in names:
        load_by_path(name, os.path.join(source, name.rsplit(".", 1)[1] + ".py"))
    # Tests of client API that 3.12 removed (ftplib and poplib's keyfile and
    # certfile arguments): they fail with any asyncore, so they are skipped
    # for the reference and for asynframe alike.
    import ftplib, inspect
    if "keyfile" not in inspect.signature(ftplib.FTP_TLS).parameters:
        for name, cls, method in (("test.test_ftplib", "TestTLS_FTPClass", "test_context"),
                                  ("test.test_poplib", "TestPOP3_SSLClass", "test_context")):
            klass = getattr(sys.modules.get(name), cls, None)
            if klass is not None and hasattr(klass, method):
                setattr(klass, method, unittest.skip("keyfile= was removed in 3.12")(
                    getattr(klass, method)))
results = {}
for name in names:
    if source == "-":
        suite = unittest.defaultTestLoader.loadTestsFromName(name)
    else:
        suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[name])
    stream = io.StringIO()
    result = unittest.TextTestRunner(stream=stream, verbosity=2).run(suite)
    module = sys.modules.get(name)
    used = {}
    for attr in ("asyncore", "asynchat", "smtpd"):
        if module is not None and hasattr(module, attr):
            target = getattr(module, attr)
            if attr == "smtpd":
                target = getattr(target, "asynchat", None)
            used["%s.%s" % (name, attr)] = getattr(target, "__name__", "?")
    describe = lambda pairs: [[str(test), text[-1500:]] for test, text in pairs]
    results[name] = {
        "core": core,
        "run": result.testsRun,
        "failures": describe(result.failures),
        "errors": describe(result.errors),
        "skipped": len(result.skipped),
        "expected_failures": len(result.expectedFailures),
        "unexpected_successes": [str(t) for t in result.unexpectedSuccesses],
        "used": used,
    }
print(json.dumps(results))
"""


def missing_suites():
    missing = []
    for name in SUITES:
        try:
            spec = importlib.util.find_spec(name)
        except ImportError:
            spec = None
        if spec is None:
            missing.append(name)
    return missing


def suites_dir_elsewhere():
    """A directory with the suites' files from another (<= 3.11) interpreter.

    ``ASYNFRAME_CPYTHON_SUITES_DIR`` names it; otherwise pyenv installs of
    3.11, 3.10 and 3.9 are searched.  None when there is no such directory.
    """
    names = [name.rsplit(".", 1)[1] + ".py" for name in SUITES]
    candidates = []
    if os.environ.get("ASYNFRAME_CPYTHON_SUITES_DIR"):
        candidates.append(os.environ["ASYNFRAME_CPYTHON_SUITES_DIR"])
    roots = [os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")]
    for root in roots:
        versions = os.path.join(root, "versions")
        if not os.path.isdir(versions):
            continue
        for minor in ("3.11", "3.10", "3.9"):
            for entry in sorted(os.listdir(versions), reverse=True):
                if entry.startswith(minor + "."):
                    candidates.append(os.path.join(versions, entry, "lib", "python" + minor, "test"))
    for directory in candidates:
        if all(os.path.isfile(os.path.join(directory, name)) for name in names):
            return directory
    return None


def suites_source():
    """ "-" when this interpreter has the suites, else a directory of them, else None."""
    if not missing_suites():
        return "-"
    return suites_dir_elsewhere()


def require_suites():
    if suites_source() is not None:
        return
    missing = missing_suites()
    message = (
        "%s not in this interpreter's test package (Python %s; removed in 3.12) and no "
        "<= 3.11 interpreter's copy found (set ASYNFRAME_CPYTHON_SUITES_DIR)"
        % (" and ".join(missing), sys.version.split()[0])
    )
    if REQUIRE:
        pytest.fail("ASYNFRAME_REQUIRE_CPYTHON_SUITES=1 but " + message, pytrace=False)
    pytest.skip(message)


class SuiteRun:
    """One runner subprocess, started at once, its JSON read on demand."""

    def __init__(self, impl, pure, workdir, source):
        env = dict(os.environ)
        env.pop("ASYNFRAME_NO_EXTENSIONS", None)
        if pure:
            env["ASYNFRAME_NO_EXTENSIONS"] = "1"
        # the suites create their socket files in the working directory
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, impl, source, *SUITES],
            env=env,
            cwd=str(workdir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._result = None

    def result(self):
        if self._result is None:
            try:
                out, err = self.proc.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
                raise AssertionError("suite run timed out:\n" + err[-3000:]) from None
            assert self.proc.returncode == 0, "runner failed:\n" + err[-3000:]
            self._result = json.loads(out.strip().splitlines()[-1])
        return self._result

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory):
    require_suites()
    source = suites_source()
    runs = {
        name: SuiteRun(impl, pure, tmp_path_factory.mktemp("cpython-" + name), source)
        for name, impl, pure in (
            ("stdlib", "stdlib", False),
            ("c", "asynframe", False),
            ("python", "asynframe", True),
        )
        if not (name == "c" and NO_EXTENSIONS)  # the core fixture skips it then
        # 3.12+: the reference is the pyasyncore/pyasynchat backport, if installed
        and not (name == "stdlib" and not reference_modules_available())
    }
    try:
        yield runs
    finally:
        for run in runs.values():
            run.stop()


def reference_modules_available():
    """Whether ``import asyncore, asynchat`` gives modules other than asynframe's."""
    return all(importlib.util.find_spec(name) is not None for name in ("asyncore", "asynchat"))


def counts(result):
    return "%s: run=%d failures=%d errors=%d skipped=%d" % (
        result["core"],
        result["run"],
        len(result["failures"]),
        len(result["errors"]),
        result["skipped"],
    )


@pytest.mark.timeout(TIMEOUT + 30)
@pytest.mark.parametrize("suite", SUITES)
def test_cpython_suites_pass_on_asynframe(core, suite_runs, suite):
    which = core.IMPLEMENTATION
    got = suite_runs[which].result()[suite]
    if "stdlib" not in suite_runs:
        # no reference modules at all (3.12+ without the backports): the
        # suites must still pass, with nothing to compare the counts to
        summary = "%s asynframe %s | no reference modules" % (suite, counts(got))
        print("\n" + summary)
        assert got["run"] > 0 and not got["failures"] and not got["errors"], summary
        return
    ref = suite_runs["stdlib"].result()[suite]
    summary = "%s asynframe %s | stdlib %s" % (suite, counts(got), counts(ref))
    print("\n" + summary)
    assert got["core"] == which, summary
    # the suite really ran on asynframe's modules, and the reference did not
    assert got["used"] and all(v.startswith("asynframe.") for v in got["used"].values()), got["used"]
    assert all(not v.startswith("asynframe.") for v in ref["used"].values()), ref["used"]
    problems = "".join("\n--- %s\n%s" % (test, text) for test, text in got["failures"] + got["errors"])
    assert not got["failures"] and not got["errors"], summary + problems
    assert not got["unexpected_successes"], summary
    assert (got["run"], got["skipped"]) == (ref["run"], ref["skipped"]), summary
    assert ref["run"] > 0 and not ref["failures"] and not ref["errors"], summary


@pytest.mark.timeout(30)
def test_require_flag_turns_a_missing_suite_into_a_failure():
    # Checked in a subprocess that hides the suites, as Python 3.12+ does.
    code = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in %r: raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "sys.path.insert(0, %r)\n"
        "import test_cpython_suites as t\n"
        "print(t.missing_suites())\n"
        "try:\n"
        "    t.require_suites()\n"
        "except BaseException as exc:\n"
        "    print(type(exc).__name__)\n"
    ) % (SUITES, os.path.dirname(os.path.abspath(__file__)))
    outcomes = {}
    for flag in ("0", "1"):
        # and no other interpreter's copy to fall back on
        env = dict(
            os.environ, ASYNFRAME_REQUIRE_CPYTHON_SUITES=flag, ASYNFRAME_CPYTHON_SUITES_DIR="", PYENV_ROOT=os.devnull
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=25
        )
        assert proc.returncode == 0, proc.stderr
        outcomes[flag] = proc.stdout.split()
    assert outcomes["0"][-1] == "Skipped", outcomes
    assert outcomes["1"][-1] == "Failed", outcomes
