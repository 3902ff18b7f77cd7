"""Fixtures for tests with real libvirt guests."""

from __future__ import annotations

import pathlib

import pytest

from tests.e2e import guest


@pytest.fixture(scope="session")
def guest_image() -> pathlib.Path:
    return guest.build_image()


@pytest.fixture
def image(guest_image: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """The marked test image, under the images path the test's agents are given."""
    return guest.image_with_marker(guest_image, tmp_path / "images" / guest.IMAGE)
