"""What a runner on Nomad is told about the file store, in its job."""

from __future__ import annotations

import json

from pydantic import BaseModel

import yurt
from yurt.backends.nomad.jobspec import build_job
from yurt.backends.nomad.naming import PayloadRef
from yurt.config import NomadConfig
from yurt.files.location import (
    PAYLOAD_HEADER,
    PAYLOAD_TOKEN_ENV,
    cluster_env,
    from_environ,
    upload_credentials,
)
from yurt.runner.fetch import TOKEN_ENV
from yurt.spec import build_spec


class Hi(BaseModel):
    text: str


class Hello(yurt.App):
    @yurt.endpoint("/")
    def hi(self, body: Hi) -> Hi:
        return body


SHA = "ab" * 32


def test_a_nomad_runner_gets_the_upload_url_and_its_digest() -> None:
    """The job's Env names the router to upload to, the lifetime and the payload's digest, and
    no store directory (a cluster runner has no shared disk); the payload token it uploads with
    comes from the job's Variable (the template), never the job body."""
    env = cluster_env("https://yurt.example.com/", 3600.0, SHA)
    payload = PayloadRef("https://yurt.example.com/p", SHA, "tok", "r", env)
    job = build_job("o/hello", build_spec(Hello), payload, NomadConfig(python="/py"))
    [task] = job["TaskGroups"][0]["Tasks"]
    assert task["Env"] == {
        "PYTHONUNBUFFERED": "1",
        "YURT_FILES_URL": "https://yurt.example.com",
        "YURT_FILES_TTL": "3600",
        "YURT_PAYLOAD_SHA256": SHA,
    }
    assert '"tok"' not in json.dumps(job)
    where = from_environ(task["Env"])
    assert where is not None and where.directory is None
    rendered = {**task["Env"], TOKEN_ENV: "tok"}  # what the task's template adds
    assert upload_credentials(rendered) == {
        "Authorization": "Bearer tok",
        PAYLOAD_HEADER: SHA,
    }


def test_the_payload_token_is_named_once() -> None:
    """The toolkit reads the token under the name the runner's fetch reads it."""
    assert PAYLOAD_TOKEN_ENV == TOKEN_ENV
    assert upload_credentials({}) == {}
