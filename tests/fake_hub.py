"""A Hugging Face Hub on 127.0.0.1 for tests: real downloads, no internet.

Serves in-memory repositories in the URL layout that huggingface_hub uses
(point `HF_ENDPOINT` at `FakeHub.url`):

  HEAD/GET /{repo}/resolve/{revision}/{path}           model files
  HEAD/GET /datasets/{repo}/resolve/{revision}/{path}  data set files
  GET /api/{models,datasets}/{repo}/revision/{rev}     repository info (sha)
  GET /api/{models,datasets}/{repo}/tree/{rev}         file listing, paged
                                                       with a `Link` header

with the headers huggingface_hub needs (X-Repo-Commit, ETag,
Content-Length; byte ranges for resumed transfers) and the Hub's error
codes (X-Error-Code: RepoNotFound, EntryNotFound, GatedRepo). Faults are
injected per file (`fail`): an HTTP 500, or a GET whose connection drops
after half of the body. Every request is logged (`requests`), so tests can
count what was really sent. Bound to 127.0.0.1 only; each connection times
out after a few seconds, and the server stops when the `with` block ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import pathlib
import socket
import threading
import urllib.parse

PAGE_SIZE = 4  # tree entries per listing page (the Hub uses 1000)


@dataclasses.dataclass
class Repo:
    files: dict[str, bytes]
    sha: str
    token: str | None = None  # needs `Authorization: Bearer <token>`
    private: bool = False  # without the token: 401 RepoNotFound (else GatedRepo)


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str  # URL path, unquoted, without the query
    range: str | None
    authorization: str | None


class FakeHub:
    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self._faults: dict[tuple[str, str], list[str]] = {}
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    # ------------------------------------------------------------- set-up
    def add_repo(
        self, repo_id, files: dict, *, repo_type="model", token=None, private=False
    ):
        """files: {path in repo: bytes}; returns the repo's commit sha.

        With `token`, requests without it get HTTP 401: as the Hub answers
        for a gated repository, or (`private`) for a private one."""
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha1(files[name]).digest())
        repo = Repo(dict(files), digest.hexdigest(), token, private)
        self.repos[(repo_type, repo_id)] = repo
        return repo.sha

    def add_folder(self, repo_id, folder, *, repo_type="model", token=None):
        root = pathlib.Path(folder)
        files = {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }
        return self.add_repo(repo_id, files, repo_type=repo_type, token=token)

    def fail(self, path_in_repo: str, *kinds: str, method: str = "GET"):
        """The next len(kinds) `method` requests of that file fail: '500'
        (an HTTP 500) or 'drop' (GET only: half the body, then the
        connection closes). '@revision' and '@tree' name the repository-info
        and listing API routes ('500' only)."""
        self._faults[(method, path_in_repo)] = list(kinds)

    # ------------------------------------------------------------ queries
    def count(self, method: str, path_suffix: str) -> int:
        with self._lock:
            return sum(
                r.method == method and r.path.endswith(path_suffix)
                for r in self.requests
            )

    def resolve_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if "/resolve/" in r.path]

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---------------------------------------------------------- lifecycle
    def __enter__(self):
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def _take_fault(self, method, path_in_repo):
        with self._lock:
            kinds = self._faults.get((method, path_in_repo))
            return kinds.pop(0) if kinds else None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds a connection may sit idle
    fake: FakeHub

    def log_message(self, *args):  # keep pytest's output clean
        pass

    # -------------------------------------------------------------- verbs
    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        parts = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parts.path)
        query = urllib.parse.parse_qs(parts.query)
        with self.fake._lock:
            self.fake.requests.append(
                Request(
                    self.command,
                    path,
                    self.headers.get("Range"),
                    self.headers.get("Authorization"),
                )
            )
        segments = path.strip("/").split("/")
        if segments[0] == "api" and len(segments) >= 6:
            repo_type = {"models": "model", "datasets": "dataset"}.get(segments[1])
            repo_id = "/".join(segments[2:4])
            repo = self._repo(repo_type, repo_id)
            if repo is None:
                return
            if self.fake._take_fault(self.command, "@" + segments[4]) == "500":
                return self._error(500, None, "internal error (injected)")
            if segments[4] == "revision":
                return self._json(
                    {
                        "id": repo_id,
                        "sha": repo.sha,
                        "siblings": [{"rfilename": f} for f in sorted(repo.files)],
                    }
                )
            if segments[4] == "tree":
                return self._tree(repo, "/".join(segments[6:]), parts, query)
            return self._error(404, None, "no such API route")
        repo_type = "model"
        if segments[0] == "datasets":
            repo_type, segments = "dataset", segments[1:]
        if len(segments) < 5 or segments[2] != "resolve":
            return self._error(404, None, "not a resolve URL")
        repo = self._repo(repo_type, "/".join(segments[:2]))
        if repo is None:
            return
        revision, name = segments[3], "/".join(segments[4:])
        if revision not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"no revision {revision}")
        if name not in repo.files:
            return self._error(404, "EntryNotFound", f"no file {name}", repo.sha)
        self._file(repo, name, body)

    # ------------------------------------------------------------ answers
    def _repo(self, repo_type, repo_id) -> Repo | None:
        repo = self.fake.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
            if repo.private:
                self._error(401, "RepoNotFound", "Repository not found")
            else:
                self._error(
                    401,
                    "GatedRepo",
                    f"Access to {repo_type} {repo_id} is restricted. You must have "
                    "access to it and be authenticated to access it.",
                )
            return None
        return repo

    def _file(self, repo: Repo, name: str, body: bool):
        data = repo.files[name]
        fault = self.fake._take_fault(self.command, name)
        if fault == "500":
            return self._error(500, None, "internal error (injected)")
        start = 0
        spec = self.headers.get("Range")
        if spec and spec.startswith("bytes="):
            start = int(spec[len("bytes=") :].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header(
                "Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"
            )
        self.end_headers()
        if not body:
            return
        if fault == "drop":
            self.wfile.write(data[start : start + (len(data) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data[start:])

    def _tree(self, repo: Repo, under: str, parts, query):
        prefix = f"{under}/" if under else ""
        names = sorted(f for f in repo.files if f.startswith(prefix))
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, folders = [], set()
        for name in names:
            rest = name[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            for i in range(rest.count("/")):
                folders.add(prefix + "/".join(rest.split("/")[: i + 1]))
            data = repo.files[name]
            entries.append(
                {
                    "type": "file",
                    "path": name,
                    "size": len(data),
                    "oid": hashlib.sha1(data).hexdigest(),
                }
            )
        entries += [
            {
                "type": "directory",
                "path": d,
                "oid": hashlib.sha1(d.encode()).hexdigest(),
            }
            for d in sorted(folders)
        ]
        cursor = int(query.get("cursor", ["0"])[0])
        page = entries[cursor : cursor + PAGE_SIZE]
        headers = {}
        if cursor + PAGE_SIZE < len(entries):
            q = {k: v[0] for k, v in query.items()} | {"cursor": cursor + PAGE_SIZE}
            nxt = f"{self.fake.url}{parts.path}?{urllib.parse.urlencode(q)}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._json(page, headers)

    def _json(self, value, headers=None):
        payload = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, status, code, message, commit=None):
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def isolate(monkeypatch, tmp_path, endpoint: str | None) -> pathlib.Path:
    """Point huggingface_hub at `endpoint` with an empty cache and no token.

    Returns the cache folder (a fresh HF_HUB_CACHE under tmp_path). The
    settings huggingface_hub reads once at import are patched in its
    constants module; the ones our code reads per call are set in the
    environment.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    if endpoint is not None:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
    return cache


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
