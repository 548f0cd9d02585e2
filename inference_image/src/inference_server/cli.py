"""``inference-server``: serve a model (or, with --demo, the embedded demo model)."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, help="OpenAI-compatible, batched, streaming inference server.")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from inference_server.api import request_id_var

        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str) -> None:
    """JSON lines on stderr, each with the request id. Prompts and completions are never logged."""
    from pythonjsonlogger.json import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = name != "uvicorn.access"  # our middleware logs requests


def _read_key(value: str | None, path: Path | None) -> str | None:
    if path is not None:
        return path.read_text(encoding="utf-8").strip()
    return value


def _tenant_quotas(claim: str, per_minute: int, burst: int, overrides_json: str):
    from inference_server.quota import Limit, TenantQuotas

    try:
        raw = json.loads(overrides_json)
        overrides = {str(tenant): Limit(int(v["requestsPerMinute"]), int(v["burst"])) for tenant, v in raw.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise typer.BadParameter(f"TENANT_OVERRIDES: expected {{tenant: {{requestsPerMinute, burst}}}}: {exc}") from exc
    return TenantQuotas(claim=claim, default=Limit(per_minute, burst), overrides=overrides)


@app.command()
def serve(
    demo: Annotated[bool, typer.Option("--demo", envvar="DEMO", help="Build the small offline demo model and serve it.")] = False,
    model_dir: Annotated[Path | None, typer.Option(envvar="MODEL_DIR", help="Local model directory.")] = None,
    model_id: Annotated[str | None, typer.Option(envvar="MODEL_ID", help="Hub model id (via HF_ENDPOINT).")] = None,
    revision: Annotated[str | None, typer.Option(envvar="MODEL_REVISION", help="Pinned 40-character commit hash.")] = None,
    cache_dir: Annotated[Path, typer.Option(envvar="MODEL_CACHE_DIR", help="Hub cache volume (with --model-id).")] = Path("/models"),
    mirror_public_key_file: Annotated[Path | None, typer.Option(
        envvar="MIRROR_PUBLIC_KEY_FILE",
        help="PEM public key of the mirror's manifest signer: a --model-id download is trusted only through its signature.",
    )] = None,
    host: Annotated[str, typer.Option(envvar="HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
    device: Annotated[str, typer.Option(envvar="DEVICE", help="auto, cpu or cuda.")] = "auto",
    quantize_int8: Annotated[bool, typer.Option("--quantize-int8", envvar="QUANTIZE_INT8")] = False,
    torch_threads: Annotated[
        int | None, typer.Option(envvar="TORCH_THREADS", min=1, help="Default: the container's CPU limit minus one (kept for HTTP), at least 1.")
    ] = None,
    max_batch_size: Annotated[int, typer.Option(envvar="MAX_BATCH_SIZE", min=1)] = 16,
    max_wait_ms: Annotated[float, typer.Option(envvar="MAX_WAIT_MS", min=0)] = 10.0,
    max_queue: Annotated[int, typer.Option(envvar="MAX_QUEUE", min=1)] = 128,
    max_input_tokens: Annotated[int, typer.Option(envvar="MAX_INPUT_TOKENS", min=1)] = 2048,
    max_new_tokens: Annotated[int, typer.Option(envvar="MAX_NEW_TOKENS", min=1)] = 512,
    max_body_bytes: Annotated[int, typer.Option(envvar="MAX_BODY_BYTES", min=1024)] = 1_000_000,
    request_timeout: Annotated[float, typer.Option(envvar="REQUEST_TIMEOUT_S", min=0.1)] = 60.0,
    grace_period: Annotated[float, typer.Option(envvar="GRACE_PERIOD_S", min=0)] = 30.0,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve /v1/* without authentication (local use).")] = False,
    jwt_algorithm: Annotated[str, typer.Option(envvar="JWT_ALGORITHM")] = "RS256",
    jwt_key: Annotated[str | None, typer.Option(envvar="JWT_KEY", help="HS256 secret or RS256 public key.")] = None,
    jwt_key_file: Annotated[Path | None, typer.Option(envvar="JWT_KEY_FILE")] = None,
    jwt_audience: Annotated[str | None, typer.Option(envvar="JWT_AUDIENCE")] = None,
    jwt_issuer: Annotated[str | None, typer.Option(envvar="JWT_ISSUER")] = None,
    tenant_claim: Annotated[str, typer.Option(envvar="TENANT_CLAIM", help="JWT claim naming the tenant.")] = "sub",
    tenant_requests_per_minute: Annotated[
        int, typer.Option(envvar="TENANT_REQUESTS_PER_MINUTE", min=0, help="Per-tenant sustained rate; 0: no quotas.")
    ] = 0,
    tenant_burst: Annotated[int, typer.Option(envvar="TENANT_BURST", min=1)] = 60,
    tenant_overrides: Annotated[
        str, typer.Option(envvar="TENANT_OVERRIDES", help='JSON: {"tenant": {"requestsPerMinute": N, "burst": M}}')
    ] = "{}",
    log_level: Annotated[str, typer.Option(envvar="LOG_LEVEL")] = "info",
) -> None:
    """Serve until SIGTERM/SIGINT; then drain in-flight requests for up to --grace-period seconds."""
    import uvicorn

    from inference_server.api import ServerSettings, create_app, drain
    from inference_server.auth import JwtVerifier
    from inference_server.engine import EngineLimits
    from inference_server.loading import (
        LoadedModel,
        ModelSource,
        load_model,
        resolve_model_dir,
    )

    configure_logging(log_level)
    auth = None
    if not no_auth:
        key = _read_key(jwt_key, jwt_key_file)
        missing = [name for name, value in (("--jwt-key/--jwt-key-file", key), ("--jwt-audience", jwt_audience),
                                            ("--jwt-issuer", jwt_issuer)) if not value]  # fmt: skip
        if missing:
            raise typer.BadParameter(f"authentication needs {', '.join(missing)} (or --no-auth for local use)")
        auth = JwtVerifier(key=key, algorithm=jwt_algorithm, audience=jwt_audience, issuer=jwt_issuer)
    quotas = None
    if tenant_requests_per_minute:
        if auth is None:
            raise typer.BadParameter("tenant quotas need authentication (the tenant is a JWT claim); drop --no-auth")
        quotas = _tenant_quotas(tenant_claim, tenant_requests_per_minute, tenant_burst, tenant_overrides)
    if demo:
        from inference_server.demo import build_demo_model

        model_dir = build_demo_model(Path(tempfile.mkdtemp(prefix="inference-demo-")))
    settings = ServerSettings(
        engine=EngineLimits(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue),
        max_input_tokens=max_input_tokens, max_new_tokens=max_new_tokens, max_body_bytes=max_body_bytes,
        request_timeout_s=request_timeout, grace_period_s=grace_period, auth=auth, quotas=quotas,
    )  # fmt: skip
    try:
        key = mirror_public_key_file.read_text(encoding="utf-8") if mirror_public_key_file is not None else None
        source = ModelSource(model_dir, model_id, revision, cache_dir, mirror_public_key=key)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    exit_code = 0

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            drain(asgi)  # not ready from the first signal on; uvicorn stops accepting and drains
            super().handle_exit(sig, frame)

    def fatal(reason: str) -> None:
        nonlocal exit_code
        exit_code = 1
        server.should_exit = True

    def load() -> LoadedModel:  # off the event loop: /healthz answers and /readyz says why not while downloading
        directory, manifest = resolve_model_dir(source)
        return load_model(directory, device, quantize_int8, torch_threads, manifest_path=manifest)

    asgi = create_app(settings, load, on_fatal=fatal)
    server = DrainingServer(
        uvicorn.Config(asgi, host=host, port=port, log_config=None, timeout_graceful_shutdown=grace_period,
                       access_log=False)  # fmt: skip
    )
    server.run()
    raise typer.Exit(exit_code)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the engine thread owns the CPU budget
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    app()


if __name__ == "__main__":
    main()
