from __future__ import annotations

import pytest

from app import create_app
from config import load_settings


@pytest.fixture
def models_dir(tmp_path):
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def settings(models_dir, state_dir):
    # env={}: a test never picks up the developer's LMHOST_* variables.
    return load_settings(env={}, models_dir=models_dir, state_dir=state_dir)


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()
