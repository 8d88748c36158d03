"""The operator API against its own OpenAPI document (issue 13): schemathesis fuzzes every
operation of ``GET /v1/openapi.json`` on the real stack with an admin's token and checks that
nothing is a 5xx and every answer (status, content type, body) is the one the document lists.

Three operations are left out of the fuzz, and checked here by hand against the same document:
``DELETE /v1/users/{name}`` (the fuzz must not revoke its own admin), ``DELETE
/v1/tokens/{gid}/{nid}`` and ``POST /v1/tokens`` (the stack is shared by the session: a token
minted or revoked for a small gid/nid could be one of its agents').
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import schemathesis

# Per operation, in each phase: enough to find the odd string or huge number, and the whole
# run stays well under two minutes.
MAX_EXAMPLES = 100
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")
KEPT_OUT = ("revoke_user", "revoke_token", "add_token")


def admin_token(stack, name: str) -> str:
    argv = [stack.exe("jsacc"), "user", "add", name, "--role", "admin", "-r", stack.redis_arg,
            "--data-dir", str(stack.tmp / "token-data")]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout.strip().splitlines()[-1]


def fetch(url: str, method: str = "GET", token: str = "", body: bytes = b""):
    req = urllib.request.Request(url, method=method, data=body or None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def test_the_document_is_served_without_a_token(stack):
    status, kind, body = fetch(f"{stack.controller_url}/v1/openapi.json")
    assert (status, kind) == (200, "application/json")
    doc = json.loads(body)
    assert doc["openapi"].startswith("3.1.")
    assert "/v1/jobs/{id}/output" in doc["paths"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_document(stack, tmp_path):
    token = admin_token(stack, "openapi-fuzz")
    argv = [sys.executable, "-m", "schemathesis.cli", "run",
            f"{stack.controller_url}/v1/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            "--checks", CHECKS,
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(MAX_EXAMPLES),
            "--seed", "13",
            "--workers", "2",
            "--request-timeout", "10",
            "--generation-database", "none",
            "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path)]
    for operation_id in KEPT_OUT:
        argv += ["--exclude-operation-id", operation_id]
    env = dict(os.environ, SCHEMATHESIS_TELEMETRY="false")
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    if cp.returncode != 0:
        raise AssertionError(f"schemathesis (exit {cp.returncode}):\n{cp.stdout}\n{cp.stderr}\n"
                             f"{stack.report()}")


def validated(schema, method: str, path: str, token: str, **parts):
    """``parts`` sent to the operation, its answer checked against the document."""
    case = schema[path][method].Case(**parts)
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    case.validate_response(response)
    return response


def test_the_operations_kept_out_of_the_fuzz_answer_as_documented(stack):
    token = admin_token(stack, "openapi-admin")
    schema = schemathesis.openapi.from_url(f"{stack.controller_url}/v1/openapi.json")
    # Far from the stack's own agents (gid 1 and 2).
    minted = validated(schema, "POST", "/v1/tokens", token,
                       body={"gid": 900913, "nid": 7, "roles": ["fuzz"]})
    assert minted.status_code == 201 and minted.json()["agent"] == "900913:7"
    assert validated(schema, "DELETE", "/v1/tokens/{gid}/{nid}", token,
                     path_parameters={"gid": 900913, "nid": 7}).status_code == 204
    gone = validated(schema, "DELETE", "/v1/tokens/{gid}/{nid}", token,
                     path_parameters={"gid": 900913, "nid": 7})
    assert gone.status_code == 404 and gone.json()["error"] == "unknown_agent"
    huge = validated(schema, "DELETE", "/v1/tokens/{gid}/{nid}", token,
                     path_parameters={"gid": 2 ** 70, "nid": 7})
    assert huge.status_code == 400 and huge.json()["error"] == "bad_request"

    added = validated(schema, "POST", "/v1/users", token,
                      body={"name": "openapi-victim", "role": "viewer"})
    assert added.status_code == 201
    assert validated(schema, "DELETE", "/v1/users/{name}", token,
                     path_parameters={"name": "openapi-victim"}).status_code == 204
    again = validated(schema, "DELETE", "/v1/users/{name}", token,
                      path_parameters={"name": "openapi-victim"})
    assert again.status_code == 404 and again.json()["error"] == "unknown_user"
