"""The CloudFront Function on blob responses, run by node (the same JavaScript CloudFront runs)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from components.mirror.policies import EDGE_FUNCTION

RUNNER = """
const fs = require('fs'), vm = require('vm');
const handler = vm.runInNewContext(fs.readFileSync(process.argv[1], 'utf8') + '\\n;handler');
const events = JSON.parse(fs.readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify(events.map((e) => handler(e))));
"""
COMMIT = "a" * 40
SHA = "b" * 64


def _run(events: list[dict]) -> list[dict]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required (Debian package nodejs); make test installs it")
    result = subprocess.run([node, "-e", RUNNER, str(EDGE_FUNCTION)], input=json.dumps(events), capture_output=True,
                            text=True, timeout=60, check=True)  # fmt: skip
    return json.loads(result.stdout)


def _event(query: dict[str, str]) -> dict:
    return {
        "version": "1.0",
        "request": {"method": "HEAD", "uri": f"/blobs/sha256/{SHA}",
                    "querystring": {k: {"value": v} for k, v in query.items()}, "headers": {}},
        "response": {"statusCode": 200, "headers": {"etag": {"value": '"0123-md5-from-s3"'},
                                                     "x-amz-server-side-encryption": {"value": "AES256"},
                                                     "content-length": {"value": "42"}}},
    }  # fmt: skip


def test_blob_responses_carry_the_hub_headers_the_redirect_passed_along():
    [lfs, regular] = _run([_event({"commit": COMMIT, "etag": SHA}), _event({"commit": COMMIT, "etag": "c" * 40})])
    assert lfs["headers"]["x-repo-commit"] == {"value": COMMIT}
    assert lfs["headers"]["x-linked-etag"] == {"value": f'"{SHA}"'}
    assert lfs["headers"]["etag"] == {"value": f'"{SHA}"'}  # not S3's MD5
    assert "x-amz-server-side-encryption" not in lfs["headers"]
    assert lfs["headers"]["content-length"] == {"value": "42"}
    assert regular["headers"]["x-linked-etag"] == {"value": '"' + "c" * 40 + '"'}


def test_nothing_but_hex_gets_into_a_header():
    [injected, missing] = _run([_event({"commit": COMMIT + "\r\nset-cookie: x", "etag": "zz"}), _event({})])
    for response in (injected, missing):
        assert "x-repo-commit" not in response["headers"] and "x-linked-etag" not in response["headers"]
        assert "etag" not in response["headers"]  # S3's MD5 would only mislead the client


def test_it_fits_cloudfront_functions_limits():
    code = EDGE_FUNCTION.read_text()
    assert len(code.encode()) < 10 * 1024  # CloudFront Functions: 10 KB of code
    assert "require(" not in code and "async " not in code
