"""Seeded mutants of every file kind the engine reads: only clear errors, no hang, no crash, nothing written
outside the output folder (a short run of tests/fuzzing.py, which the report's long runs use too)."""
import sys

import pytest

from conftest import FIXTURES
from fuzzing import DEFECTS, KINDS, fuzz

MUTANTS = 300  # per kind: about 20 s in all here


def tree(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.skipif(sys.platform != "linux", reason="address-space limits (RLIMIT_AS) of the children")
@pytest.mark.parametrize("kind", KINDS)
def test_mutants_end_in_clear_errors_or_load(tmp_path, kind):
    fixtures = tree(FIXTURES)
    (tmp_path / "out").mkdir()
    result = fuzz(kind, MUTANTS, seed=14, rlimit_gb=3, timeout=60, work=tmp_path / "out")
    assert sum(result["counts"].values()) == MUTANTS
    assert not result["defects"], result["defects"]
    assert all(result["counts"][name] == 0 for name in DEFECTS)
    assert result["counts"]["clean"] > 0  # the mutants do reach the checks
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and tree(FIXTURES) == fixtures
