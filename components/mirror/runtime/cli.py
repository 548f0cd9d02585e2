"""``platformctl mirror …`` (and ``python -m model_mirror …`` in the mirror image)."""

from __future__ import annotations

import sys

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Hugging Face-compatible model mirror on S3: sync, verify, list, serve.")  # fmt: skip
out = Console()
err = Console(stderr=True)

Bucket = Annotated[str, typer.Option("--bucket", envvar="MIRROR_BUCKET", help="Bucket (any S3-compatible store).")]


def _store(bucket: str):
    from .store import MirrorStore

    return MirrorStore(bucket)


def _print_rows(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table on a terminal; tab-separated lines, nothing cut, when piped or logged."""
    if out.is_terminal:
        table = Table(*headers)
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    for row in [headers, *rows]:
        sys.stdout.write("\t".join(row) + "\n")


def _per_file(bars: Progress):
    """A sync progress callback: one bar per file."""
    tasks: dict[str, int] = {}

    def moved(path: str, amount: int, size: int) -> None:
        if path not in tasks:
            tasks[path] = bars.add_task(escape(path), total=size)
        bars.advance(tasks[path], amount)

    return moved


def _parse_spec(spec: str) -> tuple[str, str]:
    repo, _, revision = spec.partition("@")
    return repo, revision or "main"


@app.command()
def sync(
    bucket: Bucket,
    repo: Annotated[list[str], typer.Option("--repo", help="ORG/NAME, or ORG/NAME@REVISION; repeatable.")],
    revision: Annotated[str | None, typer.Option(help="Commit, branch or tag (for a single --repo).")] = None,
    upstream: Annotated[str, typer.Option(envvar="MIRROR_UPSTREAM", help="The Hub, or another mirror of ours.")] = (
        "https://huggingface.co"
    ),
    workers: Annotated[int, typer.Option(min=1, max=32, help="Files transferred at once.")] = 4,
    progress: Annotated[bool, typer.Option(help="Progress bars (off in logs).")] = True,
    signing_key: Annotated[str | None, typer.Option(
        envvar="MIRROR_SIGNING_KEY",
        help="Sign each manifest: kms:<key id or ARN> (AWS), or file:<PEM P-256 private key> (on premises).")] = None,
) -> None:
    """Pull revisions from upstream, verify every file, sign and publish each atomically."""
    from .sync import SyncError, sync_revision

    signer = _signer(signing_key) if signing_key else None
    if revision is not None and len(repo) != 1:
        raise typer.BadParameter("--revision goes with a single --repo; use ORG/NAME@REVISION for several")
    specs = [(repo[0], revision)] if revision is not None else [_parse_spec(s) for s in repo]
    store = _store(bucket)
    failed = 0
    for name, rev in specs:
        bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        console=err, disable=not progress, transient=True)  # fmt: skip
        try:
            with bars:
                report = sync_revision(store, name, rev, upstream=upstream, workers=workers, progress=_per_file(bars),
                                       signer=signer)  # fmt: skip
        except SyncError as exc:
            failed += 1
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            continue
        refs = f" as {', '.join(report.published_refs)}" if report.published_refs else ""
        out.print(f"{name}@{rev}: published {report.commit}{refs}: {report.files} files, "
                  f"{report.skipped} already stored, {report.downloaded_bytes} bytes downloaded",
                  highlight=False, soft_wrap=True)  # fmt: skip
    if failed:
        raise typer.Exit(1)


def _signer(spec: str):
    from pathlib import Path

    from .signing import KmsSigner, LocalSigner, SignatureError

    kind, _, where = spec.partition(":")
    if kind == "kms" and where:
        import boto3

        return KmsSigner(key_id=where, client=boto3.client("kms"))
    if kind == "file" and where:
        try:
            return LocalSigner(Path(where).read_text(encoding="utf-8"))
        except (OSError, ValueError, SignatureError) as exc:
            raise typer.BadParameter(f"--signing-key {spec}: {exc}") from exc
    raise typer.BadParameter(f"--signing-key {spec!r}: expected kms:<key id or ARN> or file:<path to a PEM key>")


@app.command()
def verify(
    bucket: Bucket,
    repo: Annotated[list[str] | None, typer.Option("--repo", help="Only these repos (default: all).")] = None,
    signatures: Annotated[bool, typer.Option("--signatures", help="Check each revision's signature instead.")] = False,
    public_key: Annotated[str | None, typer.Option(
        envvar="MIRROR_PUBLIC_KEY_FILE", help="PEM public key the signatures must verify with (--signatures).")] = None,
) -> None:
    """Re-hash every stored blob the published revisions list (or, with --signatures, check every
    revision's signature); exit 1 on damage."""
    from .sync import verify as verify_store
    from .sync import verify_signatures

    if signatures:
        if not public_key:
            raise typer.BadParameter("--signatures needs --public-key (the PEM file of the signing key's public half)")
        from pathlib import Path

        checked, damage = verify_signatures(_store(bucket), Path(public_key).read_text(encoding="utf-8"), repo or None)
        what = "revision signatures"
    else:
        checked, damage = verify_store(_store(bucket), repo or None)
        what = "blobs"
    if not damage:
        out.print(f"{checked} {what} verified, no damage", soft_wrap=True)
        return
    _print_rows(("repo", "commit", "file", "problem"),
                [(item.repo, item.commit, item.path, item.problem) for item in damage])  # fmt: skip
    err.print(f"[red]{len(damage)} problem(s)[/] in {checked} {what} checked")
    raise typer.Exit(1)


@app.command("ls")
def list_published(
    bucket: Bucket,
    repo: Annotated[list[str] | None, typer.Option("--repo", help="Only these repos (default: all).")] = None,
) -> None:
    """What is published: each repo's names and commits, with file counts and sizes."""
    store = _store(bucket)
    rows = []
    for name in repo or store.repos():
        refs = store.refs(name)
        for commit in store.commits(name):
            manifest = store.manifest(name, commit)
            assert manifest is not None
            names = ", ".join(sorted(ref for ref, target in refs.items() if target == commit)) or "-"
            rows.append((name, commit, names, str(len(manifest.files)), str(sum(f.size for f in manifest.files)),
                         manifest.published_at))  # fmt: skip
    _print_rows(("repo", "commit", "names", "files", "bytes", "published"), rows)


@app.command()
def serve(
    bucket: Bucket,
    host: Annotated[str, typer.Option(envvar="HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8080,
    public_url: Annotated[str | None, typer.Option(envvar="MIRROR_PUBLIC_URL",
                                                   help="Address clients use (behind a CDN or ingress).")] = None,  # fmt: skip
) -> None:
    """Serve the bucket as a Hub-compatible endpoint (clients: HF_ENDPOINT=http://HOST:PORT)."""
    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(_store(bucket), public_url=public_url), host=host, port=port, log_level="warning")


def main() -> None:
    app()
