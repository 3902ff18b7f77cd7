"""`make up` picks the libvirt driver only when libvirtd answers, and says why not."""

from __future__ import annotations

import pytest
from hack import devenv


def test_a_libvirtd_that_does_not_answer_means_the_fake_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("libvirt", reason="without libvirt-python the import is the reason")
    monkeypatch.delenv("KUBENOVA_DRIVER", raising=False)
    problem = devenv.libvirt_problem("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    assert problem is not None
    assert problem.startswith("libvirtd does not answer at qemu+unix:///system")


def test_the_fake_driver_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBENOVA_DRIVER", "fake")
    assert devenv.libvirt_problem() == "KUBENOVA_DRIVER=fake"
