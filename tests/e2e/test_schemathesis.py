"""schemathesis against the document `lmhost serve` serves (real gunicorn, supervisor and
instances), every check on, zero failures and no process left. Two runs:

- No models: a request that passes validation can only be answered 404, so a 400 is the
  request validation's own verdict, and a body the document calls valid must not get one
  (positive_data_acceptance as schemathesis defines it): the document is no looser than the
  validation.
- The models the document's examples name (tiny synthetic stand-ins for openai/gpt-oss-20b and
  nomic-ai/nomic-embed-text-v1.5): requests reach real instances, so answers and streams are
  checked against the document and a body it calls invalid must not be served
  (negative_data_rejection). A valid body may still be refused by a rule no JSON Schema can
  state (an embedding model asked to chat, a context longer than the model's, a config
  llama.cpp refuses): 400 and 422 count as accepted answers in this run.

Both servers have API tokens (the document declares the bearer scheme on every route that
needs one), and schemathesis sends an admin token: its ignored_auth check then makes sure that
each such route refuses a request without it, or with a wrong one.

Generation is deterministic and bounded; the models' contexts are small, so no generated
request generates for long.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import clean_env
from tests.helpers import api_token, our_processes, wait_for
from lmhost import synthetic

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
# `make test` runs a quick, deterministic pass; `make soak` sets thousands of cases, random
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "50"))
DETERMINISTIC = MAX_EXAMPLES <= 50
TOKEN = api_token()
# Warnings that mean the document and the service disagree; "missing_test_data" (404s) is
# what a run without models is about, "validation_mismatch" (mostly 400s) what the rules
# above make of a run with models.
WARNINGS = ["method_not_allowed", "missing_deserializer", "unresolvable_reference",
            "unsupported_regex"]

NO_MODELS_CONFIG = f"""
[warnings]
fail-on = {json.dumps(WARNINGS + ["validation_mismatch"])}
"""
EXAMPLE_MODELS_CONFIG = f"""
[warnings]
fail-on = {json.dumps(WARNINGS)}

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429"]
"""


def run_schemathesis(server, work_dir: Path, config: str) -> dict:
    """Run schemathesis; return how many answers of each (path, status) it got."""
    work_dir.mkdir()
    (work_dir / "schemathesis.toml").write_text(config)
    result = subprocess.run(
        [SCHEMATHESIS, "--config-file", "schemathesis.toml", "run", server.url + "/openapi.json",
         "--checks", "all", "--phases", "examples,coverage,fuzzing", "--workers", "1",
         "--max-examples", str(MAX_EXAMPLES),
         *(["--generation-deterministic"] if DETERMINISTIC else []),
         "--header", f"Authorization: Bearer {TOKEN}",
         "--request-timeout", "20", "--no-color", "--report", "har", "--report-har-path", "answers.har"],
        cwd=work_dir, capture_output=True, text=True, timeout=300 * max(1, MAX_EXAMPLES // 50))
    assert result.returncode == 0, result.stdout[-30000:] + result.stderr[-5000:]
    entries = json.loads((work_dir / "answers.har").read_text())["log"]["entries"]
    return collections.Counter((urlsplit(e["request"]["url"]).path, e["response"]["status"])
                               for e in entries)


def stop_cleanly(server) -> None:
    assert server.stop() == 0
    wait_for(lambda: not our_processes(server.state_dir), timeout=10,
             what="every instance the run loaded to be gone")


def test_nothing_to_find_no_check_fails(serve, short_tmp, summary):
    (short_tmp / "models").mkdir()
    server = serve(short_tmp / "models", env=clean_env(LMHOST_API_TOKENS=TOKEN))
    answers = run_schemathesis(server, short_tmp / "schemathesis", NO_MODELS_CONFIG)
    summary(f"schemathesis, no models: {sum(answers.values())} requests, every check held")
    assert answers[("/v1/chat/completions", 400)] and answers[("/v1/chat/completions", 404)]
    # ignored_auth probed every route that needs a token, without one or with a wrong one
    for path in ("/api/v1/models", "/api/v1/models/load", "/api/v1/models/unload",
                 "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        assert answers[(path, 401)], f"no request to {path} was refused: {answers}"
    stop_cleanly(server)


@pytest.fixture
def example_models(short_tmp):
    models = short_tmp / "models"
    synthetic.write_moe_llama(models / "openai" / "gpt-oss-20b-GGUF" / "gpt-oss-20b-F16.gguf",
                              context_length=512, name="gpt-oss-20b")
    synthetic.write_bert_embedding(
        models / "nomic-ai" / "nomic-embed-text-v1.5-GGUF" / "nomic-embed-text-v1.5-F16.gguf",
        name="Nomic Embed Text v1.5")
    return models


def test_real_instances_no_check_fails(serve, example_models, short_tmp, summary):
    # JIT loads get a 128-token context, so a request without max_tokens ends soon; one
    # llama.cpp thread each, which the tiny models run fastest with on a busy machine
    server = serve(example_models, env=clean_env(LMHOST_CONTEXT_LENGTH="128",
                                                 LMHOST_INSTANCE_THREADS="1",
                                                 LMHOST_API_TOKENS=TOKEN))
    answers = run_schemathesis(server, short_tmp / "schemathesis", EXAMPLE_MODELS_CONFIG)
    summary(f"schemathesis, real instances: {sum(answers.values())} requests "
            f"({sum(n for (_, status), n in answers.items() if status == 200)} served), every "
            "check held")
    for path in ("/api/v1/models/load", "/api/v1/models/unload", "/v1/chat/completions",
                 "/v1/completions", "/v1/embeddings", "/api/v1/chat"):
        assert answers[(path, 200)], f"no request to {path} was served: {answers}"
    stop_cleanly(server)
