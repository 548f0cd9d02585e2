"""schemathesis, run against the served OpenAPI document: no generated input may cause a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import auth_headers


def test_no_generated_request_causes_a_server_error(server, tmp_path):
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [str(schemathesis), "run", f"{server.url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "25", "--request-timeout", "30",
         "--header", f"Authorization:{auth_headers()['Authorization']}", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # It reached the generation endpoints' logic, not just their 404s and the health checks.
    assert "Missing test data" not in output, output[-4000:]
    generated = int(output.split(" generated,")[0].rsplit("\n", 1)[-1].split()[-1])
    assert generated >= 100, output[-2000:]
