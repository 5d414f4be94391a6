"""The lock files cover pyproject.toml: what make setup installs is what the project asks for."""
import os
import re
import tomllib

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


def test_every_dependency_is_locked_at_a_version_it_allows():
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)["project"]
    lock = locked("requirements.lock")
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(spec)
        if req.marker and not req.marker.evaluate():
            continue  # for another Python (os-ken instead of Ryu): locked there
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not in requirements.lock: run scripts/lock.py"
        assert req.specifier.contains(lock[name][0]), \
            f"requirements.lock has {req.name} {lock[name][0]}, pyproject.toml asks {spec}"


def test_every_locked_package_has_a_hash_or_comes_from_debian():
    for name in ("requirements.lock", "build.lock"):
        for pkg, (version, hashes, apt) in locked(name).items():
            assert bool(hashes) != bool(apt), f"{name}: {pkg} {version} needs a hash or an apt package"


def test_the_build_tools_are_locked_apart():
    build, runtime = locked("build.lock"), locked("requirements.lock")
    assert {"setuptools", "wheel"} <= set(build)
    assert not set(build) & set(runtime)
