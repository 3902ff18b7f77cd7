"""The chaos runner (hack/chaos.py) for a few faults, so that CI exercises it: `make chaos`
runs the same for 200."""

from __future__ import annotations

import json
import pathlib

import pytest
from hack import chaos

pytestmark = pytest.mark.controlplane

SEED = 11  # any: the run is random by seed, its timings are the machine's


def test_a_short_random_run_has_no_violations(tmp_path: pathlib.Path) -> None:
    report = chaos.run(chaos.Options(faults=10, seed=SEED, results_dir=tmp_path))
    assert len(report.outcomes) == 10
    assert report.violations == []
    figures = report.figures()
    assert figures["faults"] == 10
    assert figures["convergence_seconds"]["max"] < 60
    json.dumps(figures)  # what `make chaos` writes
