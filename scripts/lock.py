#!/usr/bin/python3
"""Write the lock files that ``make setup`` installs with ``pip --require-hashes``.

    /usr/bin/python3 scripts/lock.py [--constraint FILE]

Resolves pyproject.toml's dependencies (and its ``test`` extra) with pip's own
resolver (``pip install --dry-run --report``) in a throw-away virtual
environment made as scripts/setup-machine.sh makes ``.venv`` (Debian's Python
3.11, seeing Debian's site-packages), and writes:

- ``build.lock``: setuptools and wheel, which build Ryu 4.34 (only with
  ``--no-build-isolation``, and only with an old setuptools: 64.0.3 did, 69.5.1
  and later failed) and this project;
- ``requirements.lock``: every other package, ``name==version`` with the sha256
  of the file pip chose. A dependency that Debian's packages already provide
  (``ovs`` from python3-openvswitch, matching the switch daemon; ``six``) is
  pinned to the version installed, without a hash, with the Debian package
  named (``# apt: python3-six``): scripts/setup-machine.sh installs those
  packages, apt verified their files, and pip checks the version.

The hashes are of the files for this machine's Python and platform: Debian 12's
Python 3.11 writes ``build.lock`` and ``requirements.lock``; another Python writes
``build-py3.N.lock`` and ``requirements-py3.N.lock`` (Debian 13: 3.13, Ubuntu
24.04: 3.12, with os-ken in Ryu's place), which scripts/setup-machine.sh picks there. ``--constraint`` keeps versions (for
example those of an older lock) where the resolver may choose.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"  # the interpreter .venv is made from (it sees Mininet's package)
# Ryu's setup.py builds with setuptools 64.0.3 and fails with 69.5.1 and later; on
# Python 3.12 and later, where os-ken takes Ryu's place, a current setuptools
BUILD = {(3, 11): ["setuptools==64.0.3", "wheel==0.45.1"]}
BUILD_NEWER = ["setuptools==80.9.0", "wheel==0.45.1"]


def lock_names(version: tuple[int, int]) -> tuple[str, str]:
    """The lock files for a Python version: Debian 12's 3.11 has the plain names."""
    if version == (3, 11):
        return "build.lock", "requirements.lock"
    tag = f"py{version[0]}.{version[1]}"
    return f"build-{tag}.lock", f"requirements-{tag}.lock"


def pip(venv: str, *args: str) -> None:
    subprocess.run([os.path.join(venv, "bin", "pip"), *args, "--disable-pip-version-check",
                    "-q"], check=True)


def report(venv: str, requirements: list[str], *extra: str) -> list[dict]:
    """What pip would install for ``requirements``: its report's ``install`` list."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        pip(venv, "install", "--dry-run", "--report", out.name, *extra, *requirements)
        return json.load(out)["install"]


def lines(installs: list[dict]) -> list[str]:
    out = []
    for item in sorted(installs, key=lambda i: i["metadata"]["name"].lower()):
        meta, info = item["metadata"], item["download_info"]
        algo, digest = info["archive_info"]["hash"].split("=", 1)
        if algo != "sha256":
            raise SystemExit(f"lock: {meta['name']}'s index gave a {algo} hash, not sha256")
        out.append(f"{meta['name']}=={meta['version']} \\\n    --hash=sha256:{digest}")
    return out


def from_system(venv: str, installs: list[dict]) -> list[str]:
    """Pins of the dependencies pip found satisfied by Debian's site-packages."""
    code = (
        "import json, sys\n"
        "from importlib import metadata\n"
        "from pip._vendor.packaging.requirements import Requirement\n"
        "from pip._vendor.packaging.utils import canonicalize_name as c\n"
        "installs = json.load(sys.stdin)\n"
        "mine = {c(i['metadata']['name']) for i in installs} | {'setuptools', 'wheel'}\n"
        "todo = [r for i in installs for r in i['metadata'].get('requires_dist', [])]\n"
        "seen, out = set(), {}\n"
        "while todo:\n"
        "    r = Requirement(todo.pop())\n"
        "    if r.marker and not r.marker.evaluate({'extra': ''}):\n"
        "        continue\n"
        "    n = c(r.name)\n"
        "    if n in seen or n in mine:\n"
        "        continue\n"
        "    seen.add(n)\n"
        "    d = metadata.distribution(r.name)\n"
        "    out[d.metadata['Name']] = (d.version, str(d._path))\n"
        "    todo += d.requires or []\n"
        "print(json.dumps(out))\n")
    found = json.loads(subprocess.run([os.path.join(venv, "bin", "python"), "-c", code],
                                      input=json.dumps(installs), text=True,
                                      capture_output=True, check=True).stdout)
    out = []
    for name, (version, path) in sorted(found.items(), key=lambda kv: kv[0].lower()):
        owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True).stdout
        if not owner:
            raise SystemExit(f"lock: {name} {version} ({path}) is neither from PyPI nor from "
                             "a Debian package: uninstall it from the system's Python")
        out.append(f"{name}=={version}  # apt: {owner.split(':')[0]}")
    return out


def constraints(text: str) -> str:
    """A pip constraints file of a lock file's (or a constraints file's) text: each
    hashed pin as ``name==version``, without its hashes (pip takes a hash in a
    constraints file for a demand of hashes everywhere, and refused); pins of
    packages from the system's Debian packages (``# apt:``) left out, since another
    system's versions of them are another's to give."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "# apt:" in line:
            continue
        out.append(line.split()[0])
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--constraint", help="a pip constraints file or a lock file: "
                        "its versions are kept where the resolver may choose")
    args = parser.parse_args()
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    extra = []
    if args.constraint:
        with open(args.constraint) as fh:
            pins = constraints(fh.read())
        kept = tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="fwlock-")
        kept.write(pins)
        kept.flush()
        extra = ["-c", kept.name]
    version = tuple(json.loads(subprocess.run(
        [PYTHON, "-c", "import json, sys; print(json.dumps(sys.version_info[:2]))"],
        capture_output=True, text=True, check=True).stdout))
    tools = BUILD.get(version, BUILD_NEWER)
    with open("/etc/os-release") as fh:
        system = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
    head = ("# Generated by scripts/lock.py from pyproject.toml: do not edit by hand.\n"
            f"# Hashes of the files for CPython {version[0]}.{version[1]} on "
            f"{os.uname().machine} Linux ({system.get('PRETTY_NAME', '?').strip(chr(34))}).\n")
    with tempfile.TemporaryDirectory(prefix="fwlock-") as tmp:
        venv = os.path.join(tmp, "venv")
        subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", venv], check=True)
        build = report(venv, tools, "--ignore-installed")
        pip(venv, "install", *tools)
        runtime = report(venv, wanted, "--no-build-isolation", *extra)
        system = from_system(venv, runtime)
    for name, body in zip(lock_names(version), (lines(build), lines(runtime) + system)):
        with open(os.path.join(HERE, name), "w") as fh:
            fh.write(head + "\n".join(body) + "\n")
        print(f"lock: wrote {name} ({len(body)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
