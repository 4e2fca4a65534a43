"""Files from the Hugging Face Hub: the data release and published weights.

All downloads go through `huggingface_hub` (shared cache, tokens, resumed
transfers); failures are `errors.UserError`s naming the repository and file.
Why, and how offline works: docs/design.md.
"""

from __future__ import annotations

import os
import pathlib
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

import huggingface_hub
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors

# Nothing else of the package: the data layer (TFDS builder) and the models
# layer (weights import) both use this module.
from astrom3_jax import errors

PROBE_TIMEOUT_S = 5.0
# A server error (HTTP 5xx) on a transfer is retried this many times, with
# 1, 2, 4 s pauses (huggingface_hub itself retries only the metadata request).
SERVER_ERROR_RETRIES = 3
LOGIN_ADVICE = "set HF_TOKEN to a token with access, or run `hf auth login`"


class HubError(errors.UserError, ConnectionError):
    """A download that failed: no network, a server error, a broken transfer."""


class HubOfflineError(HubError):
    """Offline, and the cache does not hold the file."""


class HubNotFoundError(errors.UserError, FileNotFoundError):
    """No such repository, revision or file on the Hub."""


class HubAccessError(errors.UserError, PermissionError):
    """HTTP 401/403: a gated or private repository, or a bad token."""


def endpoint() -> str:
    """The Hub's base URL: `HF_ENDPOINT` as set now, else huggingface_hub's."""
    value = os.environ.get("HF_ENDPOINT", "").strip()
    return (value or hf_constants.ENDPOINT).rstrip("/")


def offline_reason() -> str | None:
    """Why the Hub cannot be reached now (None: it can, as far as we know).

    `HF_HUB_OFFLINE=1`, or the endpoint refuses a TCP connection or gives
    none within `PROBE_TIMEOUT_S`. Then only the cache is read, so a download
    the cache cannot answer fails in seconds instead of after a minute of
    retries.
    """
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    if flag in {"1", "ON", "YES", "TRUE"} or hf_constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    return unreachable(endpoint())


def unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if a TCP connection to `url`'s host (or its proxy) opens in time.

    Otherwise why not. Runs in a thread so that a hanging DNS lookup is
    bounded too.
    """
    target = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"{type(e).__name__}: {e}")

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return outcome[0] and f"{host}:{port}: {outcome[0]}"


def repo_url(repo_id: str, repo_type: str = "model") -> str:
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{endpoint()}/{prefix}{repo_id}"


def _what(repo_id: str, repo_type: str) -> str:
    return f"Hub {'data set' if repo_type == 'dataset' else 'model'} {repo_id!r}"


def translate(
    error: BaseException, repo_id: str, repo_type: str, filename: str | None = None
) -> errors.UserError | None:
    """Our error for one that huggingface_hub (or the network) raised, or None."""
    what = _what(repo_id, repo_type)
    where = f"{what}, file {filename!r}" if filename else what
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, hf_errors.GatedRepoError):
        return HubAccessError(
            f"{what} is gated (HTTP {status}): accept its conditions at "
            f"{repo_url(repo_id, repo_type)} and {LOGIN_ADVICE}"
        )
    if isinstance(error, hf_errors.RepositoryNotFoundError) or status == 401:
        if status in (401, 403):
            return HubAccessError(
                f"{what}: HTTP {status}, access refused: the repository is private "
                f"or gated, or the id is wrong, or the token is invalid; check the "
                f"id and {LOGIN_ADVICE}"
            )
        return HubNotFoundError(
            f"no {what} (HTTP {status}) at {endpoint()}: check the id; if the "
            f"repository is private, {LOGIN_ADVICE}"
        )
    if isinstance(error, hf_errors.RevisionNotFoundError):
        return HubNotFoundError(f"{what} has no such revision (HTTP {status})")
    if isinstance(error, hf_errors.RemoteEntryNotFoundError):
        return HubNotFoundError(f"{what} has no file {filename!r} (HTTP {status})")
    if status == 403:
        return HubAccessError(f"{where}: HTTP 403 forbidden; {LOGIN_ADVICE}")
    if isinstance(error, hf_errors.OfflineModeIsEnabled | HubOfflineError):
        return HubOfflineError(f"{where}: not in the cache, and {error}")
    if isinstance(error, hf_errors.LocalEntryNotFoundError):
        cause = error.__cause__ or error.__context__
        detail = f"{type(cause).__name__}: {cause}" if cause else str(error)
        return HubError(f"{where}: could not download ({_one_line(detail)})")
    if isinstance(error, hf_errors.HfHubHTTPError):
        return HubError(f"{where}: could not download: HTTP {status} from the server")
    if _is_network_error(error):
        return HubError(
            f"{where}: could not download ({type(error).__name__}: "
            f"{_one_line(str(error))})"
        )
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _is_network_error(error: BaseException) -> bool:
    """A failure of the connection or transfer (not of the local disk)."""
    # httpx's errors (a connection refused or dropped, a timeout) share no
    # base class with OSError.
    module = type(error).__module__ or ""
    if module.startswith(("httpx", "httpcore")):
        return True
    # huggingface_hub's check that a transfer delivered every byte.
    return type(error) is OSError and "Consistency check failed" in str(error)


def _server_error(error: BaseException | None) -> bool:
    status = getattr(getattr(error, "response", None), "status_code", None)
    return isinstance(error, hf_errors.HfHubHTTPError) and (status or 0) >= 500


def _transfer_failed(error: BaseException) -> bool:
    """A file's GET answered 5xx (huggingface_hub retries only its HEAD)."""
    return _server_error(error)


def _listing_failed(error: BaseException) -> bool:
    """snapshot_download's repository info or file listing answered 5xx
    (it reports that as a LocalEntryNotFoundError caused by the answer), or
    one of its file transfers did."""
    if isinstance(error, hf_errors.LocalEntryNotFoundError):
        return _server_error(error.__cause__)
    return _server_error(error)


def with_retries(
    fn: Callable, retry_if: Callable = _transfer_failed, retries=SERVER_ERROR_RETRIES
):
    """fn(), again after 1, 2, 4 s pauses while it fails as `retry_if` says."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as e:
            if attempt == retries or not retry_if(e):
                raise
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


PROBE = "probe"  # `offline=PROBE`: find out now whether the Hub answers


def _run(fetch, repo_id, repo_type, filename, offline, retry_if):
    if offline == PROBE:
        offline = offline_reason()
    try:
        return pathlib.Path(with_retries(lambda: fetch(offline is not None), retry_if))
    except Exception as e:
        where = _what(repo_id, repo_type) + (
            f", file {filename!r}," if filename else ""
        )
        if offline is not None and isinstance(e, hf_errors.LocalEntryNotFoundError):
            raise HubOfflineError(
                f"{where} is not in the Hugging Face cache, and {offline}"
            ) from e
        ours = translate(e, repo_id, repo_type, filename)
        if ours is None:
            raise
        raise ours from e


def download(
    repo_id: str,
    filename: str,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    cache_dir=None,
    offline: str | None = PROBE,
    quiet: bool = False,
) -> pathlib.Path:
    """One file of a Hub repository: its path in the cache (downloaded if needed).

    `revision`: a branch or a commit hash (None: the default branch).
    `offline`: why only the cache may be read (e.g. `offline_reason()`), or
    None to use the Hub too, or PROBE (default) to find out now. `quiet`
    hides the file's progress bar. Raises HubOfflineError, HubNotFoundError,
    HubAccessError or HubError.
    """

    def fetch(cache_only):
        return huggingface_hub.hf_hub_download(
            repo_id,
            filename,
            repo_type=repo_type,
            revision=revision,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            endpoint=endpoint(),
            local_files_only=cache_only,
            tqdm_class=huggingface_hub.utils.silent_tqdm if quiet else None,
        )

    return _run(fetch, repo_id, repo_type, filename, offline, _transfer_failed)


def snapshot(
    repo_id: str,
    allow_patterns: Sequence[str],
    *,
    repo_type: str = "model",
    revision: str | None = None,
    cache_dir=None,
    offline: str | None = PROBE,
) -> pathlib.Path:
    """The files of a repository that match `allow_patterns`, as one folder.

    The folder is the cache's snapshot of the resolved commit
    (`.../snapshots/<commit hash>/`), holding the files at their paths in
    the repository. Arguments and errors as for `download`.
    """

    def fetch(cache_only):
        return huggingface_hub.snapshot_download(
            repo_id,
            repo_type=repo_type,
            revision=revision,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            endpoint=endpoint(),
            allow_patterns=list(allow_patterns),
            local_files_only=cache_only,
        )

    return _run(fetch, repo_id, repo_type, None, offline, _listing_failed)
