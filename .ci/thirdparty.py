"""Third-party applications built on asyncore/asynchat: their own test suites.

    python3.11 .ci/thirdparty.py --wheel dist/asynframe-...whl --work DIR

For each project below, on this interpreter (3.11 or older: the stdlib
modules are the reference): a venv with the asynframe wheel and the
project's sdist, then the project's own tests three times: on the stdlib
modules, and with ``asynframe.install(force=True)`` (a ``sitecustomize`` on
PYTHONPATH) on the compiled core and on the pure core.  A small pytest
plugin records which ``asyncore``/``asynchat`` each test process got, so a
run that silently used the wrong modules fails.

Passes when both asynframe runs have no failure and no error, and run and
skip as many tests as the stdlib run.  A stdlib failure is reported, not
fatal: pyftpdlib's ``test_nlst`` races TLS shutdown on the stdlib now and
then (giampaolo/pyftpdlib#466).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET

PLUGIN = """
import os, sys

def pytest_sessionfinish(session, exitstatus):
    import asyncore, asynchat
    with open(os.environ["AF_CHECK_FILE"], "a") as out:
        out.write("%s %s\\n" % (asyncore.__name__, asynchat.__name__))
"""

SITECUSTOMIZE = "import asynframe\nasynframe.install(force=True)\n"


def fix_pyftpdlib(src, venv):
    # The shipped test certificate is 1024-bit RSA (expired 2013), which
    # OpenSSL 3 refuses: every FTPS test would fail on the stdlib too.
    from_dir = os.path.join(src, "pyftpdlib", "test")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-sha256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-keyout",
            os.path.join(from_dir, "key.tmp"),
            "-out",
            os.path.join(from_dir, "cert.tmp"),
        ],
        check=True,
        capture_output=True,
    )
    with open(os.path.join(from_dir, "keycert.pem"), "wb") as out:
        for part in ("key.tmp", "cert.tmp"):
            with open(os.path.join(from_dir, part), "rb") as f:
                out.write(f.read())
            os.unlink(os.path.join(from_dir, part))


def fix_lazr_smtptest(src, venv):
    # `sys.version >= '3.5'` compares strings ('3.11' < '3.5'): the server
    # then hands bytes to message_from_string and fails on the stdlib too.
    path = os.path.join(site_packages(venv), "lazr", "smtptest", "server.py")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("sys.version >= '3.5'", "sys.version_info >= (3, 5)"))


# name, version, extra test requirements, fix-up, where the tests run
# ("src": the unpacked sdist; "site": the installed package), pytest args
PROJECTS = [
    ("pyftpdlib", "1.5.9", ["psutil", "pyopenssl"], fix_pyftpdlib, "src", ["pyftpdlib/test"]),
    ("waitress", "1.1.0", [], None, "src", ["waitress/tests"]),
    (
        "lazr.smtptest",
        "2.0.4",
        [],
        fix_lazr_smtptest,
        "site",
        [
            "lazr/smtptest",
            "--doctest-modules",
            "--doctest-glob=*.rst",
            "-o",
            "doctest_optionflags=ELLIPSIS NORMALIZE_WHITESPACE",
        ],
    ),
]
MODES = ("stdlib", "c", "python")


def site_packages(venv):
    out = subprocess.run(
        [os.path.join(venv, "bin", "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def counts(junit):
    failures = errors = skipped = 0
    failed = []
    seen = set()
    for case in ET.parse(junit).getroot().iter("testcase"):
        # a failing test whose teardown errors too is two testcase entries
        seen.add((case.get("classname"), case.get("name")))
        for child in case:
            if child.tag in ("failure", "error"):
                failed.append("%s::%s" % (case.get("classname"), case.get("name")))
                if child.tag == "failure":
                    failures += 1
                else:
                    errors += 1
            elif child.tag == "skipped":
                skipped += 1
    return {"tests": len(seen), "failures": failures, "errors": errors, "skipped": skipped, "failed": failed}


def run_project(name, version, extras, fix, where, args, wheel, work):
    base = os.path.join(work, name)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    venv = os.path.join(base, "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q"]
    sdists = os.path.join(base, "sdist")
    subprocess.run(
        pip[:-2] + ["download", "-q", "--no-deps", "--no-binary", ":all:", "%s==%s" % (name, version), "-d", sdists],
        check=True,
    )
    (sdist,) = [os.path.join(sdists, f) for f in os.listdir(sdists)]
    subprocess.run(pip + [wheel, sdist, "pytest", "pytest-timeout"] + extras, check=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(base)
    src = os.path.join(base, os.path.basename(sdist)[: -len(".tar.gz")])
    if fix is not None:
        fix(src, venv)
    cwd = src if where == "src" else site_packages(venv)
    for directory, text in (("plugin", PLUGIN), ("subst", SITECUSTOMIZE)):
        os.makedirs(os.path.join(base, directory))
        target = "af_check.py" if directory == "plugin" else "sitecustomize.py"
        with open(os.path.join(base, directory, target), "w") as f:
            f.write(text)
    results = {}
    for mode in MODES:
        env = dict(os.environ)
        env.pop("ASYNFRAME_NO_EXTENSIONS", None)
        paths = [os.path.join(base, "plugin")]
        if mode != "stdlib":
            paths.insert(0, os.path.join(base, "subst"))
        if mode == "python":
            env["ASYNFRAME_NO_EXTENSIONS"] = "1"
        check = os.path.join(base, "modules-%s.txt" % mode)
        junit = os.path.join(base, "junit-%s.xml" % mode)
        env.update(
            PYTHONPATH=os.pathsep.join(paths),
            AF_CHECK_FILE=check,
            PYTEST_PLUGINS="af_check",
            # options here, not on the command line: pyftpdlib's
            # command-line tests read sys.argv
            PYTEST_ADDOPTS="-q -p no:cacheprovider --timeout=120 --junitxml=" + junit,
        )
        proc = subprocess.run(
            [os.path.join(venv, "bin", "python"), "-m", "pytest"] + args,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        print("  %-8s %s" % (mode, (proc.stdout.strip().splitlines() or ["(no output)"])[-1]))
        result = counts(junit)
        with open(check) as f:
            result["modules"] = set(f.read().split())
        results[mode] = result
    return results


def verdict(name, results):
    problems = []
    ref = results["stdlib"]
    if ref["modules"] != {"asyncore", "asynchat"}:
        problems.append("the stdlib run used %s" % sorted(ref["modules"]))
    for mode in ("c", "python"):
        got = results[mode]
        if got["modules"] != {"asynframe.asyncore", "asynframe.asynchat"}:
            problems.append("%s run used %s" % (mode, sorted(got["modules"])))
        if got["failures"] or got["errors"]:
            problems.append("%s run failed: %s" % (mode, got["failed"]))
        if (got["tests"], got["skipped"]) != (ref["tests"], ref["skipped"]):
            problems.append(
                "%s run: %d tests, %d skipped; stdlib %d, %d"
                % (mode, got["tests"], got["skipped"], ref["tests"], ref["skipped"])
            )
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, help="the asynframe wheel to install")
    parser.add_argument("--work", required=True, help="a scratch directory")
    opts = parser.parse_args()
    if sys.version_info >= (3, 12):
        sys.exit("needs CPython <= 3.11 (the stdlib asyncore/asynchat are the reference)")
    wheel = os.path.abspath(opts.wheel)
    table, failed = [], False
    for name, version, extras, fix, where, args in PROJECTS:
        print("%s %s" % (name, version), flush=True)
        results = run_project(name, version, extras, fix, where, args, wheel, opts.work)
        problems = verdict(name, results)
        for mode in MODES:
            r = results[mode]
            table.append(
                "%-14s %-7s %-7s tests %4d  failures %d  errors %d  skipped %d"
                % (name, version, mode, r["tests"], r["failures"], r["errors"], r["skipped"])
            )
        if results["stdlib"]["failed"]:
            table.append("%-14s stdlib failures (reported, not fatal): %s" % (name, results["stdlib"]["failed"]))
        for problem in problems:
            table.append("%-14s PROBLEM: %s" % (name, problem))
        failed = failed or bool(problems)
    print("\n".join(table))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
