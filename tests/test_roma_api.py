"""Every roma function the package calls exists in the installed roma and in the floor that
requirements.txt allows (``roma>=X``), so an older roma cannot fail mid-run with an AttributeError
(roma 1.5.x has no ``inv_sinc``: every SO(3) path failed with it, issue 19)."""

from __future__ import annotations

import re
from pathlib import Path

import roma
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
USE = re.compile(r"\broma((?:\.[A-Za-z_]\w*)+)")

# The roma release that first has each name we use; a new use needs a row here. Checked against the
# wheels on PyPI: 1.5.0 has the first three but not inv_sinc; 1.6 ("1.6.0") is the first with
# inv_sinc; 1.6.1 is the first with roma.__version__, which this test reads.
INTRODUCED = {
    "rotmat_to_rotvec": "1.5.0",  # present in 1.5.0, perhaps earlier
    "special_procrustes": "1.5.0",  # present in 1.5.0, perhaps earlier
    "unitquat_to_rotmat": "1.5.0",  # present in 1.5.0, perhaps earlier
    "inv_sinc": "1.6.0",
    "rigid_points_registration": "1.5.0",  # with weights; checked in the 1.5.0 wheel
    "__version__": "1.6.1",  # read below
}


def roma_uses() -> dict[str, list[str]]:
    """``roma.<name>`` chains (e.g. "mappings.inv_sinc") in hand_vae/**/*.py -> the files using them."""
    uses: dict[str, list[str]] = {}
    for path in sorted((ROOT / "hand_vae").rglob("*.py")):
        for chain in USE.findall(path.read_text(encoding="utf-8")):
            uses.setdefault(chain[1:], []).append(str(path.relative_to(ROOT)))
    return uses


def roma_floor() -> Version:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    floors = [m.group(1) for line in lines if (m := re.fullmatch(r"\s*roma\s*>=\s*([\w.]+).*", line))]
    assert len(floors) == 1, f"requirements.txt should pin roma with one 'roma>=X' line, found {floors}"
    return Version(floors[0])


def test_the_scan_finds_the_roma_calls():
    uses = roma_uses()
    assert "inv_sinc" in uses and "special_procrustes" in uses, uses  # the SO(3) model's calls


def test_every_roma_name_the_package_uses_exists_in_the_installed_roma():
    for chain, files in roma_uses().items():
        obj = roma
        for part in chain.split("."):
            assert hasattr(obj, part), (
                f"roma.{chain} (used in {files}) is missing from roma {roma.__version__}"
            )
            obj = getattr(obj, part)


def test_requirements_floor_has_every_roma_name_the_package_uses():
    floor = roma_floor()
    assert Version(roma.__version__) >= floor, f"installed roma {roma.__version__} is below the floor {floor}"
    names = {chain.split(".")[-1] for chain in roma_uses()} | {"__version__"}
    for name in sorted(names):
        assert name in INTRODUCED, (
            f"roma.{name} is used: add the roma version that introduced it to INTRODUCED"
        )
        assert Version(INTRODUCED[name]) <= floor, (
            f"roma.{name} first appears in roma {INTRODUCED[name]}, but requirements.txt allows roma>={floor}"
        )
