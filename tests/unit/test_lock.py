"""The lock files cover pyproject.toml: what make setup installs is what the project asks for."""
import os
import re
import tomllib

import pytest

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def locked(name: str) -> dict:
    """name -> (version, hashes, apt package) of each entry of a lock file."""
    with open(os.path.join(HERE, name)) as fh:
        text = fh.read().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)"
                     r"\s*(?:#\s*apt:\s*(\S+))?\s*$", line)
        assert m, f"{name}: a line that is neither a hashed pin nor an apt pin: {line!r}"
        out[canonicalize_name(m.group(1))] = (m.group(2), m.group(3).split(), m.group(4))
    return out


def lock_files() -> dict:
    """Python version -> its (build lock, lock) file names: Debian 12's 3.11 has the
    plain names, another Python its own (scripts/lock.py)."""
    out = {"3.11": ("build.lock", "requirements.lock")}
    for name in os.listdir(HERE):
        m = re.fullmatch(r"requirements-py(3\.\d+)\.lock", name)
        if m:
            out[m.group(1)] = (f"build-py{m.group(1)}.lock", name)
    return out


@pytest.mark.parametrize("python", sorted(lock_files()))
def test_every_dependency_is_locked_at_a_version_it_allows(python):
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)["project"]
    name_of_lock = lock_files()[python][1]
    lock = locked(name_of_lock)
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(spec)
        if req.marker and not req.marker.evaluate({"python_version": python}):
            continue  # for another Python (os-ken instead of Ryu): locked there
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not in {name_of_lock}: run scripts/lock.py"
        assert req.specifier.contains(lock[name][0]), \
            f"{name_of_lock} has {req.name} {lock[name][0]}, pyproject.toml asks {spec}"


def test_every_locked_package_has_a_hash_or_comes_from_debian():
    for name in (n for pair in lock_files().values() for n in pair):
        for pkg, (version, hashes, apt) in locked(name).items():
            assert bool(hashes) != bool(apt), f"{name}: {pkg} {version} needs a hash or an apt package"


@pytest.mark.parametrize("python", sorted(lock_files()))
def test_the_build_tools_are_locked_apart(python):
    build, runtime = (locked(n) for n in lock_files()[python])
    assert {"setuptools", "wheel"} <= set(build)
    assert not set(build) & set(runtime)


def test_a_lock_file_serves_as_constraints_without_its_hashes_and_system_pins():
    """scripts/lock.py --constraint with a lock file (how a new system's lock keeps an
    older one's versions) failed: pip takes a hash in a constraints file for a demand
    of hashes everywhere. And a pin of a package from the system's Debian packages
    (ovs 3.5.0 on Debian 13) must not bind another system (Ubuntu 24.04 has 3.3.9)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("lock", os.path.join(HERE, "scripts", "lock.py"))
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    with open(os.path.join(HERE, "requirements-py3.13.lock")) as fh:
        text = fh.read()
    pins = lock.constraints(text).split()
    kept = {canonicalize_name(p.split("==")[0]): p.split("==")[1] for p in pins}
    entries = locked("requirements-py3.13.lock")
    assert kept == {name: version for name, (version, _, apt) in entries.items() if not apt}
    assert "ovs" in entries and "ovs" not in kept
    assert not any("hash" in p for p in pins)
