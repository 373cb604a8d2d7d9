"""API token settings, the exposure check, the log formats: pure, no server."""

from __future__ import annotations

import io
import json
import logging

import pytest

from config import (ConfigError, check_exposure, client_token, load_settings, logs, read_tokens,
                    to_env, without_secrets)
from tests.helpers import api_token

TS_TOKEN = "sk-lm-Abcd1234:Abcdefghij0123456789"  # a colon of its own: not a scope


def test_tokens_from_the_variable_with_and_without_scope():
    s = load_settings(env={"LMHOST_API_TOKENS": f" one , {TS_TOKEN}:inference,two:admin,"})
    assert read_tokens(s) == {"one": "admin", TS_TOKEN: "inference", "two": "admin"}
    assert s.auth_enabled and not load_settings(env={}).auth_enabled


def test_tokens_file_lines_comments_and_both_sources(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# the team's tokens\n\n{TS_TOKEN}\n  ci-bot:inference  \n")
    s = load_settings(env={"LMHOST_API_TOKENS_FILE": str(path), "LMHOST_API_TOKENS": "env-one"})
    assert read_tokens(s) == {"env-one": "admin", TS_TOKEN: "admin", "ci-bot": "inference"}
    path.write_text("")  # a file with no token: auth stays on, nobody gets in
    assert read_tokens(s) == {"env-one": "admin"}
    assert load_settings(env={"LMHOST_API_TOKENS_FILE": str(path)}).auth_enabled


@pytest.mark.parametrize("value, named", [
    ("secret one", "entry 1"),
    ("good,:inference", "entry 2 has no token"),
    ("same-secret:admin,same-secret:inference", "entry 2 repeats"),
    ("tab\tsecret", "entry 1"),
])
def test_bad_tokens_are_named_by_position_never_quoted(value, named):
    with pytest.raises(ConfigError) as info:
        load_settings(env={"LMHOST_API_TOKENS": value})
    message = str(info.value)
    assert message.startswith("LMHOST_API_TOKENS: ") and named in message
    assert "secret" not in message


def test_a_bad_tokens_file_is_named_by_line_never_quoted(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# comment\nfine-one\nbad secret here\n")
    s = load_settings(env={"LMHOST_API_TOKENS_FILE": str(path)})
    with pytest.raises(ConfigError, match=r"^LMHOST_API_TOKENS_FILE: .*tokens line 3: ") as info:
        read_tokens(s)
    assert "secret" not in str(info.value) and "fine-one" not in str(info.value)
    missing = load_settings(env={"LMHOST_API_TOKENS_FILE": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="cannot read .*nope: No such file"):
        read_tokens(missing)


def test_tokens_stay_out_of_repr_and_of_the_supervisors_environment():
    token = api_token()
    s = load_settings(env={"LMHOST_API_TOKENS": token, "LMHOST_API_TOKEN": token})
    assert token not in repr(s) and token not in str(s)
    env = to_env(s)
    assert env["LMHOST_API_TOKENS"] == token  # gunicorn's processes get them
    assert token not in json.dumps(without_secrets(env))
    assert load_settings(env=env) == s  # and back (the tokens file: "" is none)


@pytest.mark.parametrize("host, env, refused", [
    ("127.0.0.1", {}, False), ("::1", {}, False), ("localhost", {}, False),
    ("127.0.0.2", {}, False),
    ("0.0.0.0", {}, True), ("10.1.2.3", {}, True), ("gpu-box.internal", {}, True),
    ("0.0.0.0", {"LMHOST_ALLOW_UNAUTHENTICATED": "1"}, False),
    ("0.0.0.0", {"LMHOST_API_TOKENS": "x"}, False),
    ("0.0.0.0", {"LMHOST_API_TOKENS_FILE": "/etc/lmhost/tokens"}, False),
])
def test_no_tokens_means_loopback_only_unless_told(host, env, refused):
    s = load_settings(env=env, host=host)
    if refused:
        with pytest.raises(ConfigError, match=r"^host: .*not a loopback address.*"
                                              "LMHOST_ALLOW_UNAUTHENTICATED=1"):
            check_exposure(s)
    else:
        check_exposure(s)


def test_the_cli_token_is_read_alone():
    assert client_token({"LMHOST_API_TOKEN": " abc ", "LMHOST_PORT": "bad"}) == "abc"
    assert client_token({}) == ""
    with pytest.raises(ConfigError, match="^LMHOST_API_TOKEN: "):
        client_token({"LMHOST_API_TOKEN": "a b"})


def _record(**fields):
    record = logging.LogRecord("lmhost.access", logging.INFO, __file__, 1, "request", (), None)
    record.fields = fields
    return record


def test_text_and_json_log_lines_carry_the_fields():
    record = _record(method="GET", path="/v1/models", status=200, instance=None,
                     agent="curl 8")
    text = logs.TextFormatter().format(record)
    assert text.endswith('request method=GET path=/v1/models status=200 instance=- agent="curl 8"')
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["logger"] == "lmhost.access" and entry["level"] == "info"
    assert (entry["method"], entry["status"], entry["instance"]) == ("GET", 200, None)
    assert entry["time"].endswith("Z")


def test_configure_writes_json_lines():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("json", "info", stream)
        logging.getLogger("workers.supervisor").info("loaded %s", "x")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert json.loads(stream.getvalue())["message"] == "loaded x"


def test_the_log_check_finds_a_token_or_its_secret_in_any_log(tmp_path):
    """The suite-wide check (tests/conftest.py) relies on this: a leak cannot pass unseen."""
    from tests.helpers import files_with_tokens
    token = "sk-lm-Planted1:Planted0123456789abc"  # not one of the suite's: planted on purpose
    (tmp_path / "state" / "logs").mkdir(parents=True)
    (tmp_path / "server-1.log").write_text("all fine\n")
    (tmp_path / "state" / "logs" / "abc.log").write_text(f"auth {token.partition(':')[2]}\n")
    (tmp_path / "tokens").write_text(token)  # not a log: the tokens file itself
    found = files_with_tokens(tmp_path, tokens=[token])
    assert list(found) == [str(tmp_path / "state" / "logs" / "abc.log")]
    assert token not in str(found)  # the report itself shows no token
    assert files_with_tokens(tmp_path / "server-1.log", tokens=[token]) == {}


@pytest.mark.parametrize("environ, proxies, local", [
    ({"REMOTE_ADDR": "127.0.0.1"}, 0, True),
    ({"REMOTE_ADDR": "::1"}, 0, True),
    ({"REMOTE_ADDR": "10.1.2.3"}, 0, False),
    # through a proxy whose forwarded address is ignored: the client may be anywhere
    ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}, 0, False),
    # trusted proxies: ProxyFix has put the client's own address in REMOTE_ADDR
    ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}, 1, True),
    ({"REMOTE_ADDR": "not an address"}, 0, False),
])
def test_a_client_is_local_only_from_loopback_and_not_through_an_untrusted_proxy(
        environ, proxies, local):
    from app.auth import is_local_client
    assert is_local_client(environ, proxies) is local
