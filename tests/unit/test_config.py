from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, Settings, client_url, load_settings, to_env


def test_defaults():
    s = load_settings(env={})
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 1234, 2)
    assert s.models_dir == Path.home() / ".lmhost" / "models"
    assert s.state_dir == Path.home() / ".lmhost" / "state"
    assert (s.sdk_max_sockets, s.sdk_discovery) == (256, True)
    # SDK websockets hold a thread each: they get their own, HTTP keeps LMHOST_THREADS
    assert s.worker_threads == s.threads + s.sdk_max_sockets == 264


def test_env_overrides_and_flags_win_over_env(tmp_path):
    env = {"LMHOST_PORT": "8080", "LMHOST_MODELS_DIR": str(tmp_path), "LMHOST_WORKERS": "3"}
    s = load_settings(env=env)
    assert (s.port, s.models_dir, s.workers) == (8080, tmp_path, 3)
    assert load_settings(env=env, port=9090).port == 9090


@pytest.mark.parametrize("env, key", [
    ({"LMHOST_PORT": "abc"}, "LMHOST_PORT"),
    ({"LMHOST_PORT": "70000"}, "LMHOST_PORT"),
    ({"LMHOST_WORKERS": "0"}, "LMHOST_WORKERS"),
    ({"LMHOST_LOG_LEVEL": "loud"}, "LMHOST_LOG_LEVEL"),
    ({"LMHOST_MODELS_DIR": "  "}, "LMHOST_MODELS_DIR"),
    ({"LMHOST_HOST": "a b"}, "LMHOST_HOST"),
    ({"LMHOST_PROT": "1"}, "LMHOST_PROT"),
    ({"LMHOST_SDK_MAX_SOCKETS": "-1"}, "LMHOST_SDK_MAX_SOCKETS"),
    ({"LMHOST_SDK_DISCOVERY": "maybe"}, "LMHOST_SDK_DISCOVERY"),
    ({"LMHOST_SDK_FIRST_PAUSE_MS": "51"}, "LMHOST_SDK_FIRST_PAUSE_MS"),
    ({"LMHOST_SDK_LOCAL_FRAGMENT_MS": "1001"}, "LMHOST_SDK_LOCAL_FRAGMENT_MS"),
    ({"LMHOST_LOG_FORMAT": "xml"}, "LMHOST_LOG_FORMAT"),
    ({"LMHOST_FORWARDED_PROXIES": "-1"}, "LMHOST_FORWARDED_PROXIES"),
    ({"LMHOST_GRACEFUL_TIMEOUT": "0"}, "LMHOST_GRACEFUL_TIMEOUT"),
    ({"LMHOST_SDK_TRUST_LOOPBACK": "sometimes"}, "LMHOST_SDK_TRUST_LOOPBACK"),
    ({"LMHOST_ALLOW_UNAUTHENTICATED": "2"}, "LMHOST_ALLOW_UNAUTHENTICATED"),
    ({"LMHOST_API_TOKEN": "two words"}, "LMHOST_API_TOKEN"),
])
def test_bad_values_name_the_key(env, key):
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert str(info.value).startswith(key + ":")


def test_settings_are_frozen_and_round_trip_through_env():
    s = load_settings(env={}, port=4321, host="::1")
    with pytest.raises(AttributeError):
        s.port = 1
    assert s.bind == "[::1]:4321"
    assert load_settings(env=to_env(s)) == s
    assert isinstance(s, Settings)


def test_url_is_a_known_client_setting_with_a_default():
    assert load_settings(env={"LMHOST_URL": "http://gpu-box:8080/"}).url == "http://gpu-box:8080"
    assert load_settings(env={}).url == "http://127.0.0.1:1234"


@pytest.mark.parametrize("flag, env, expected", [
    (None, {}, "http://127.0.0.1:1234"),
    (None, {"LMHOST_URL": "https://lmhost.internal"}, "https://lmhost.internal"),
    ("http://[::1]:1234/", {"LMHOST_URL": "https://lmhost.internal"}, "http://[::1]:1234"),
])
def test_client_url_flag_wins_over_env_over_default(flag, env, expected):
    assert client_url(flag, env=env) == expected


@pytest.mark.parametrize("flag, env, named", [
    ("localhost:1234", {}, "url"),
    ("http://user:secret@host", {}, "url"),
    ("http://host:99999", {}, "url"),
    (None, {"LMHOST_URL": "ftp://host"}, "LMHOST_URL"),
    (None, {"LMHOST_URL": "http://"}, "LMHOST_URL"),
])
def test_client_url_bad_values_name_their_source(flag, env, named):
    with pytest.raises(ConfigError) as info:
        client_url(flag, env=env)
    assert str(info.value).startswith(named + ":")


def test_client_url_ignores_the_server_settings():
    # a client command must not fail on a server-side typo; `lmhost serve` reports that one
    assert client_url(None, env={"LMHOST_WROKERS": "x", "LMHOST_PORT": "abc"}) == Settings.url


@pytest.mark.parametrize("raw, expected", [
    ("0", 0), ("1048576", 1 << 20), ("512M", 512 << 20), ("8G", 8 << 30), ("1.5GiB", 3 << 29),
    ("2gb", 2 << 30), ("100k", 100 << 10), (" 1T ", 1 << 40),
])
def test_memory_limit_takes_bytes_or_a_binary_unit(raw, expected):
    assert load_settings(env={"LMHOST_MEMORY_LIMIT": raw}).memory_limit == expected


@pytest.mark.parametrize("env", [
    {"LMHOST_MEMORY_LIMIT": "lots"}, {"LMHOST_MEMORY_LIMIT": "-1"}, {"LMHOST_MEMORY_LIMIT": ""},
    {"LMHOST_MEMORY_LIMIT": "nan"}, {"LMHOST_MEMORY_LIMIT": "8X"}, {"LMHOST_GUARDRAIL": "lru"},
    {"LMHOST_EVICT_EXPLICIT": "sometimes"},
])
def test_memory_settings_refuse_bad_values(env):
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert str(info.value).startswith(next(iter(env)) + ":")


def test_memory_settings_defaults_and_round_trip():
    s = load_settings(env={})
    assert (s.memory_limit, s.guardrail, s.evict_explicit) == (0, "strict", False)
    s = load_settings(env={"LMHOST_MEMORY_LIMIT": "1G", "LMHOST_GUARDRAIL": "Evict",
                           "LMHOST_EVICT_EXPLICIT": "1"})
    assert (s.memory_limit, s.guardrail, s.evict_explicit) == (1 << 30, "evict", True)
    assert load_settings(env=to_env(s)) == s


@pytest.mark.parametrize("raw, expected", [
    (None, 16 << 20), ("64K", 64 << 10), ("1M", 1 << 20), ("100MiB", 100 << 20), ("1G", 1 << 30),
])
def test_max_body_takes_a_size_from_64k_to_1g(raw, expected):
    env = {} if raw is None else {"LMHOST_MAX_BODY": raw}
    assert load_settings(env=env).max_body == expected


@pytest.mark.parametrize("raw", ["0", "1K", "65535", "2G", "big", ""])
def test_max_body_refuses_a_size_out_of_range(raw):
    with pytest.raises(ConfigError, match="^LMHOST_MAX_BODY:"):
        load_settings(env={"LMHOST_MAX_BODY": raw})


def test_every_setting_is_documented_in_config_and_readme():
    import dataclasses
    import config
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for field in dataclasses.fields(Settings):
        name = config.env_name(field.name)
        assert f"| {name} " in config.__doc__, name
        assert f"| `{name}` |" in readme, name


def test_the_sdk_first_pause_stays_under_the_instance_s_wait_for_the_first_write():
    """The pause holds the second token only while the instance waits for the worker's
    ``first_written`` (`workers.instance.jobs`); past that wait it would hold nothing."""
    from workers.instance.jobs import FIRST_WRITTEN_WAIT
    with pytest.raises(ConfigError):
        load_settings(env={"LMHOST_SDK_FIRST_PAUSE_MS": str(int(FIRST_WRITTEN_WAIT * 1000))})
