"""asynframe.install()/uninstall(): ``import asyncore``/``import asynchat``.

Every check runs in a fresh interpreter (a subprocess), so this process's
``sys.modules`` is never touched.  A missing stdlib (Python 3.12+) is
simulated on older interpreters with a ``sys.meta_path`` finder that refuses
the two names, exactly as an interpreter without them does.

Both cores: each subprocess is started once per core (``ASYNFRAME_NO_EXTENSIONS``
unset, then set to 1) and reports which core it ran on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap

import pytest

import asynframe

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Makes ``import asyncore``/``import asynchat`` fail as on 3.12+ without backports.
BLOCKER = textwrap.dedent(
    """
    import sys
    class _NoModule:
        names = set(%r)
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name in cls.names:
                raise ModuleNotFoundError("No module named %%r" %% name, name=name)
            return None
    sys.meta_path.insert(0, _NoModule)
    """
)


def blocker(*names):
    return BLOCKER % (sorted(names),)


def stdlib_has(name):
    """Whether this interpreter (or a backport) provides *name*."""
    code = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(%r) else 1)" % name
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=30).returncode == 0


STDLIB_HAS_BOTH = stdlib_has("asyncore") and stdlib_has("asynchat")


@pytest.fixture(params=["c", "python"])
def core_env(request):
    env = dict(os.environ)
    env.pop("ASYNFRAME_NO_EXTENSIONS", None)
    if request.param == "python":
        env["ASYNFRAME_NO_EXTENSIONS"] = "1"
    elif not asynframe.USING_C_CORE:
        pytest.skip("compiled core not active in this environment")
    env["EXPECTED_CORE"] = request.param
    return env


def run(code, env, *args, extra=()):
    proc = subprocess.run(
        [sys.executable, *extra, "-c", code, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert proc.returncode == 0, "subprocess failed:\n%s\n%s" % (proc.stdout, proc.stderr)
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result.pop("core") == env["EXPECTED_CORE"]
    run.output = lines[:-1]
    return result


REPORT = textwrap.dedent(
    """
    import json, sys, warnings
    import asynframe
    from asynframe import asyncore as OURS_AO, asynchat as OURS_AC

    def state():
        ao, ac = sys.modules.get("asyncore"), sys.modules.get("asynchat")
        return [None if m is None else ("ours" if m in (OURS_AO, OURS_AC) else "other")
                for m in (ao, ac)]

    def try_import():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                import asyncore, asynchat
            except ImportError:
                return "missing"
        return ["ours" if m in (OURS_AO, OURS_AC) else "other" for m in (asyncore, asynchat)]

    out = {"core": asynframe.CORE_IMPLEMENTATION}
    """
)


def test_forced_install_then_uninstall(core_env):
    code = REPORT + textwrap.dedent(
        """
        out["before"] = state()
        out["install"] = asynframe.install(force=True)
        out["installed"] = state()
        import asyncore, asynchat
        out["imported"] = [asyncore is OURS_AO, asynchat is OURS_AC]
        out["same_loop"] = asynchat.asyncore is asyncore
        out["again"] = asynframe.install(force=True)
        asynframe.uninstall()
        out["after"] = state()
        out["reimport"] = try_import()
        asynframe.uninstall()  # a second call is harmless
        print(json.dumps(out))
        """
    )
    out = run(code, core_env)
    assert out["before"] == [None, None]
    assert out["install"] is True and out["again"] is True
    assert out["installed"] == ["ours", "ours"]
    assert out["imported"] == [True, True] and out["same_loop"] is True
    assert out["after"] == [None, None]
    assert out["reimport"] == (["other", "other"] if STDLIB_HAS_BOTH else "missing")


@pytest.mark.skipif(not STDLIB_HAS_BOTH, reason="no stdlib/backport asyncore+asynchat here")
def test_unforced_install_leaves_an_existing_stdlib_alone(core_env):
    code = REPORT + textwrap.dedent(
        """
        out["install"] = asynframe.install()
        out["state"] = state()
        out["import"] = try_import()
        # already imported stdlib modules: still left alone without force;
        # with force they are replaced, and uninstall puts those very objects back
        stdlib_ao, stdlib_ac = sys.modules["asyncore"], sys.modules["asynchat"]
        out["install2"] = asynframe.install()
        out["state2"] = state()
        out["forced"] = asynframe.install(force=True)
        out["state3"] = state()
        asynframe.uninstall()
        out["restored"] = [sys.modules["asyncore"] is stdlib_ao, sys.modules["asynchat"] is stdlib_ac]
        print(json.dumps(out))
        """
    )
    out = run(code, core_env)
    assert out["install"] is False and out["state"] == [None, None]
    assert out["import"] == ["other", "other"]
    assert out["install2"] is False and out["state2"] == ["other", "other"]
    assert out["forced"] is True and out["state3"] == ["ours", "ours"]
    assert out["restored"] == [True, True]


@pytest.mark.parametrize("missing", [("asyncore", "asynchat"), ("asynchat",)], ids=["both", "asynchat"])
def test_unforced_install_where_the_stdlib_has_none(core_env, missing):
    # 3.12+: no stdlib modules, so install() always takes effect.  With a
    # backport of asyncore alone (pyasyncore without pyasynchat), asynframe's
    # asynchat needs asynframe's asyncore loop: both names must be installed.
    code = (
        blocker(*missing)
        + REPORT
        + textwrap.dedent(
            """
        out["import_before"] = try_import()
        out["install"] = asynframe.install()
        out["state"] = state()
        out["import"] = try_import()
        asynframe.uninstall()
        out["after"] = state()
        out["import_after"] = try_import()
        print(json.dumps(out))
        """
        )
    )
    out = run(code, core_env)
    assert out["import_before"] == "missing"
    assert out["install"] is True
    assert out["state"] == ["ours", "ours"]
    assert out["import"] == ["ours", "ours"]
    assert out["import_after"] == "missing"


LEGACY_SCRIPT = textwrap.dedent(
    '''
    """An old echo server and client, as written for Python 2/3.11 asyncore."""
    import asyncore, asynchat
    import socket
    import sys


    class EchoHandler(asynchat.async_chat):
        def __init__(self, sock):
            asynchat.async_chat.__init__(self, sock)
            self.set_terminator(b"\\n")
            self.data = []

        def collect_incoming_data(self, data):
            self.data.append(data)

        def found_terminator(self):
            self.push(b"".join(self.data) + b"\\n")
            self.data = []

        def handle_close(self):
            self.close()


    class EchoServer(asyncore.dispatcher):
        def __init__(self):
            asyncore.dispatcher.__init__(self)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind(("127.0.0.1", 0))
            self.listen(5)

        def handle_accept(self):
            pair = self.accept()
            if pair is not None:
                sock, addr = pair
                EchoHandler(sock)


    class EchoClient(asynchat.async_chat):
        def __init__(self, server, lines):
            asynchat.async_chat.__init__(self)
            self.server = server
            self.lines = lines
            self.replies = []
            self.buffer = b""
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.connect(server.socket.getsockname())
            self.set_terminator(b"\\n")
            for line in lines:
                self.push(line + b"\\n")

        def handle_connect(self):
            pass

        def collect_incoming_data(self, data):
            self.buffer = self.buffer + data

        def found_terminator(self):
            self.replies.append(self.buffer)
            self.buffer = b""
            if len(self.replies) == len(self.lines):
                self.close()
                self.server.close()


    server = EchoServer()
    client = EchoClient(server, [b"hello", b"world", b"x" * 100000])
    asyncore.loop(timeout=1)   # until every channel closed
    assert client.replies == client.lines, client.replies[:2]
    print("LEGACY OK", len(client.replies))
    '''
)

RUN_LEGACY = textwrap.dedent(
    """
    import json, runpy, sys
    import asynframe
    installed = asynframe.install(force=sys.argv[2] == "force")
    runpy.run_path(sys.argv[1], run_name="__main__")
    import asyncore, asynchat
    print(json.dumps({"core": asynframe.CORE_IMPLEMENTATION, "installed": installed,
                      "ours": [getattr(asyncore, "__asynframe__", False),
                               getattr(asynchat, "__asynframe__", False)]}))
    """
)


@pytest.mark.parametrize("mode", ["force", "no-stdlib", "asyncore-backport-only"])
def test_unmodified_legacy_script_runs_under_install(core_env, tmp_path, mode):
    script = tmp_path / "legacy_echo.py"
    script.write_text(LEGACY_SCRIPT)
    if mode == "force":
        code = RUN_LEGACY
    elif mode == "no-stdlib":  # as on 3.12+: nothing to force past
        code = blocker("asyncore", "asynchat") + RUN_LEGACY
    else:  # 3.12+ with pyasyncore installed but not pyasynchat
        code = blocker("asynchat") + RUN_LEGACY
    # the stdlib modules warn on import: an error here proves they stayed out
    # (except where the stdlib asyncore plays the installed backport)
    flags = () if mode == "asyncore-backport-only" else ("-W", "error::DeprecationWarning")
    out = run(code, core_env, str(script), mode, extra=flags)
    assert out == {"installed": True, "ours": [True, True]}
    assert run.output == ["LEGACY OK 3"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pure", [False, True], ids=["default", "pure-forced"])
def test_python_m_asynframe_reports_the_install(pure):
    env = dict(os.environ)
    env.pop("ASYNFRAME_NO_EXTENSIONS", None)
    if pure:
        env["ASYNFRAME_NO_EXTENSIONS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "asynframe"], env=env, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    rows = dict(line.split(None, 1) for line in proc.stdout.splitlines() if line and not line.startswith(" "))
    import asynframe

    assert rows["asynframe"].startswith(asynframe.__version__)
    assert set(rows) >= {"asynframe", "core", "poller", "python", "platform", "openssl"}
    if pure:
        assert rows["core"].startswith("python: ASYNFRAME_NO_EXTENSIONS=1 forces the pure core")
    else:
        assert rows["core"].split(":")[0] in ("c", "python")
    assert ("free-threaded" in rows["python"]) == bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
