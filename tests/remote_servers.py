"""Real local servers for the remote-shard tests: a stdlib HTTP server with faults on demand, and
moto's S3 server. Both listen on 127.0.0.1 only, in threads of the test process."""

from __future__ import annotations

import base64
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ShardServer:
    """Serves ``files`` (path -> bytes) over HTTP on 127.0.0.1, with ETag and Content-Length.

    ``faults[path]``: "404"; "drop" (send half the body, then close, every time); "drop-once" (the
    first request only); "stall" (send the headers, then wait on ``release``); "hold" (send half the
    body, then wait on ``release``). ``auth``: "user:password" a request must send (Basic).
    ``requests`` lists every path asked for, in order."""

    def __init__(self, files: dict[str, bytes], auth: str | None = None):
        self.files, self.auth, self.faults, self.requests = dict(files), auth, {}, []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                server.requests.append(self.path)
                want = server.auth and "Basic " + base64.b64encode(server.auth.encode()).decode()
                if want and self.headers.get("Authorization") != want:
                    return self.send_error(401)
                fault = server.faults.get(path)
                if fault == "404" or path not in server.files:
                    return self.send_error(404)
                data = server.files[path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", '"' + hashlib.md5(data).hexdigest() + '"')
                self.end_headers()
                if fault == "drop-once":
                    server.faults.pop(path)
                if fault in ("drop", "drop-once", "hold"):
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    if fault == "hold":
                        server.release.wait(60)
                    self.close_connection = True
                    return
                if fault == "stall":
                    server.release.wait(60)
                    return
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
