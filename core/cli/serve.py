"""`fuse serve EXPORT [--index DIR]`: an HTTP JSON API (embed, search, health, model card) and a search page."""

from __future__ import annotations

import click


@click.command("serve")
@click.argument("model_dir", metavar="EXPORT", type=click.Path(file_okay=False))
@click.option("--index", "source", help="What /search searches: an index folder fuse search built, or a folder, "
              "glob or .jsonl manifest (indexed at start, or brought up to date, as fuse search does).")
@click.option("--modality", help="The tower whose values are indexed (default: inferred from the source).")
@click.option("--index-dir", type=click.Path(file_okay=False),
              help="Where the index of --index lives (default: SOURCE/.fuse-index/MODALITY, as fuse search).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The API has no authentication: keep it on loopback or behind a proxy.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: a free one, printed at start).")
@click.option("--max-batch", default=32, show_default=True, type=click.IntRange(1, 1024),
              help="Most inputs per request, and per forward of concurrent requests batched together.")
@click.option("--batch-wait-ms", default=2.0, show_default=True, type=click.FloatRange(0, 1000),
              help="How long a forward waits for more concurrent requests to batch.")
@click.option("--max-k", default=100, show_default=True, type=click.IntRange(1, 10000), help="Most results per query.")
@click.option("--max-media-mb", default=20, show_default=True, type=click.IntRange(1, 4096),
              help="Largest media file a request may upload.")
@click.option("--device", default="auto", show_default=True, help="auto: CUDA when present, else the CPU.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Latent cache for indexing (default: $FUSE_CACHE "
              "or ~/.cache/fuse).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the latent cache while indexing.")
def serve_command(model_dir, source, modality, index_dir, host, port, max_batch, batch_wait_ms, max_k, max_media_mb,
                  device, cache_dir, no_cache):
    """Serve EXPORT over HTTP until Ctrl-C: POST /embed and /search (JSON texts or uploaded files), GET /health,
    /model, /items/ID (indexed files only) and a search page at /."""
    import socket

    from fuse.base.errors import FuseError

    try:
        import uvicorn

        from fuse.model.service_app import make_app
    except ImportError as exc:
        raise FuseError(f"fuse serve needs FastAPI and uvicorn ({exc.name} is missing): "
                        "pip install 'fuse-align[serve]'.") from None
    from fuse.base.devices import resolve_device
    from fuse.cli.embed import cache_option
    from fuse.model.load import load_aligned
    from fuse.model.service import Limits, Service, load_index

    model = load_aligned(model_dir, device=str(resolve_device(device)))
    index = None if source is None else load_index(model, source, modality, index_dir, cache_option(cache_dir, no_cache))
    limits = Limits(max_batch=max_batch, wait_ms=batch_wait_ms, max_k=max_k, max_media_bytes=max_media_mb * 2**20)
    # proto given, so that asyncio turns Nagle off on each connection (it checks IPPROTO_TCP): with proto 0,
    # every keep-alive answer waited ~40 ms for the client's delayed ACK
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # from here clients queue until the server accepts, rather than being refused
    except OSError as exc:
        sock.close()
        raise FuseError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); pick another port "
                        "(--port 0 picks a free one).") from None
    bound = sock.getsockname()[1]
    what = f"{len(index)} {index.modality} items" if index is not None else "no index (/search is off)"
    click.echo(f"serving {model_dir} ({what}) on http://{host}:{bound}/ - Ctrl-C stops", err=False)
    server = uvicorn.Server(uvicorn.Config(make_app(Service(model, index, limits)), log_level="warning",
                                           access_log=False))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: a normal end here
        click.echo("stopped")
