from tests.unit.scripted_instance import serve_instance  # noqa: F401 - the fixture
