"""The buildhub command's pure parts: the Idempotency-Key of a CI run, errors and exit codes."""

import pytest

from buildhub_cli.api import error_from_response
from buildhub_cli.cli import idempotency_key, main

WHAT = ["build", "shop", "ota", "android", ""]
GITHUB = {
    "GITHUB_RUN_ID": "9001",
    "GITHUB_RUN_ATTEMPT": "1",
    "GITHUB_REPOSITORY": "acme/shop",
    "GITHUB_JOB": "build",
}
GITLAB = {"CI_PROJECT_ID": "7", "CI_PIPELINE_ID": "55", "CI_JOB_ID": "1234"}


def test_a_step_retried_in_the_same_ci_job_sends_the_same_key():
    first = idempotency_key(WHAT, GITHUB)

    assert first == idempotency_key(WHAT, dict(GITHUB))
    assert first.startswith("cli-github-") and len(first) <= 255
    assert idempotency_key(WHAT, GITLAB).startswith("cli-gitlab-")


@pytest.mark.parametrize(
    ("environ", "what"),
    [
        ({**GITHUB, "GITHUB_RUN_ATTEMPT": "2"}, WHAT),  # "Re-run jobs" builds again
        ({**GITHUB, "GITHUB_RUN_ID": "9002"}, WHAT),
        ({**GITHUB, "GITHUB_JOB": "build-ios"}, WHAT),
        (GITHUB, ["build", "shop", "ota", "ios", ""]),  # another platform
        (GITHUB, ["build", "shop", "expo", "android", ""]),  # another target
        (GITHUB, ["build", "cart", "ota", "android", ""]),  # another app
        (GITHUB, ["build", "shop", "ota", "android", "preview"]),  # another channel
    ],
)
def test_another_run_attempt_job_or_build_sends_another_key(environ, what):
    assert idempotency_key(what, environ) != idempotency_key(WHAT, GITHUB)


def test_gitlab_retry_of_a_job_is_a_new_job_id_and_builds_again():
    assert idempotency_key(WHAT, {**GITLAB, "CI_JOB_ID": "1235"}) != idempotency_key(WHAT, GITLAB)


def test_outside_ci_there_is_no_key_unless_one_is_given():
    assert idempotency_key(WHAT, {}) == ""
    given = idempotency_key(WHAT, {"BUILDHUB_IDEMPOTENCY_KEY": "release-42"})
    assert given.startswith("cli-explicit-")
    assert given == idempotency_key(WHAT, {**GITHUB, "BUILDHUB_IDEMPOTENCY_KEY": "release-42"})


@pytest.mark.parametrize(
    ("status", "exit_code"),
    [(400, 2), (401, 2), (403, 2), (404, 2), (409, 1), (429, 1), (500, 1), (503, 1)],
)
def test_server_errors_map_to_exit_codes(status, exit_code):
    body = b'{"error": {"code": "invalid", "message": "Bad.", "fields": {"platform": "nope"}}}'

    failure = error_from_response(status, body, {"Retry-After": "30"})

    assert failure.exit_code == exit_code
    assert str(failure).startswith("Bad.")
    assert "platform: nope" in str(failure)
    assert failure.retry_after == 30


def test_an_answer_that_is_not_the_json_error_shape_still_reads_well():
    failure = error_from_response(502, b"<html>Bad gateway</html>", {})

    assert str(failure) == "the server answered HTTP 502"
    assert failure.exit_code == 1


def test_usage_errors_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("BUILDHUB_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BUILDHUB_TOKEN", "bh_x_y")
    with pytest.raises(SystemExit) as bad_target:
        main(["build", "--app", "shop", "--target", "apk", "--platform", "android"])
    assert bad_target.value.code == 2

    monkeypatch.delenv("BUILDHUB_TOKEN")
    assert main(["status"]) == 2
    assert "Set BUILDHUB_TOKEN" in capsys.readouterr().err

    monkeypatch.setenv("BUILDHUB_TOKEN", "bh_x_y")
    monkeypatch.setenv("BUILDHUB_URL", "buildhub.example.com")
    assert main(["status"]) == 2
    assert "must be an http(s) URL" in capsys.readouterr().err


def test_an_unreachable_server_is_a_message_not_a_traceback(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("BUILDHUB_URL", "http://127.0.0.1:9")  # discard: nothing listens
    monkeypatch.setenv("BUILDHUB_TOKEN", "bh_x_y")

    assert main(["status"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("buildhub: error: Could not reach BuildHub at http://127.0.0.1:9")
    assert "Traceback" not in error


def test_a_source_the_server_would_refuse_is_refused_before_uploading(
    monkeypatch, capsys, tmp_path
):
    (tmp_path / "a.js").write_text("")
    (tmp_path / "escape").symlink_to("/etc")
    monkeypatch.setenv("BUILDHUB_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BUILDHUB_TOKEN", "bh_x_y")

    code = main(
        [
            "build",
            "--app",
            "shop",
            "--target",
            "ota",
            "--platform",
            "android",
            "--source",
            str(tmp_path),
        ]
    )

    assert code == 2
    assert "escape: a symbolic link to an absolute path" in capsys.readouterr().err
