"""The install contract: two variants, each fully pinned, admitting Python 3.11 to 3.13."""

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LINUX = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux"}


def pins(lock: str, env: dict = LINUX) -> dict[str, Requirement]:
    out = {}
    for line in (REPO / lock).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                assert canonicalize_name(req.name) not in out, f"{lock}: {req.name} twice"
                out[canonicalize_name(req.name)] = req
    return out


def test_readme_commands_name_existing_locks_and_the_cpu_index():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    cpu, gpu = blocks[0].splitlines(), blocks[1].splitlines()
    for line in cpu:
        assert "--extra-index-url https://download.pytorch.org/whl/cpu -c requirements.lock" in line
    for line in gpu:
        assert "-c requirements-cuda.lock" in line and "download.pytorch.org" not in line
    assert (REPO / "requirements.lock").exists() and (REPO / "requirements-cuda.lock").exists()


def test_every_dependency_is_pinned_in_both_variants_within_its_range():
    declared = (
        PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["test"]
    )
    for lock in ("requirements.lock", "requirements-cuda.lock"):
        locked = pins(lock)
        for dep in map(Requirement, declared):
            pin = locked.get(canonicalize_name(dep.name))
            assert pin is not None, f"{lock} does not pin {dep.name}"
            (spec,) = pin.specifier
            assert spec.operator in ("==", "==="), f"{lock}: {pin} is not exact"
            assert dep.specifier.contains(spec.version, prereleases=True), (lock, str(pin))


def test_cpu_variant_takes_the_cpu_build_and_cuda_variant_the_cuda_build():
    cpu, cuda = pins("requirements.lock"), pins("requirements-cuda.lock")
    assert str(cpu["torch"].specifier) == "==2.13.0+cpu"
    assert not [n for n in cpu if n.startswith(("nvidia", "cuda", "triton"))]
    assert str(cuda["torch"].specifier) == "===2.13.0"  # excludes 2.13.0+cpu
    assert not SpecifierSet("===2.13.0").contains("2.13.0+cpu")
    assert {"triton", "nvidia-cudnn-cu13", "nvidia-cublas", "cuda-toolkit"} <= set(cuda)
    shared = {n: str(r) for n, r in cpu.items() if n != "torch"}
    assert shared == {n: str(cuda[n]) for n in shared}  # the rest is the same environment
    mac = pins("requirements.lock", {**LINUX, "sys_platform": "darwin"})
    assert str(mac["torch"].specifier) == "==2.13.0"  # macOS wheels carry no +cpu


def test_supported_pythons():
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert all(requires.contains(v) for v in ("3.11.7", "3.12.1", "3.13.0"))
    assert "3.13" in (REPO / ".ci" / "run").read_text()
