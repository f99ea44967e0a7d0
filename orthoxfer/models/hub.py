"""Files of Hugging Face repositories, and the network checks every download goes through.

A missing file never turns into a minute of HTTP retries or a traceback: the cache is
read first without any network access, the network is tried only when its host
answers (and never with ``HF_HUB_OFFLINE=1``), and a failure is one line naming the
repository, the file and the command that fetches it where the network is available.
"""

from __future__ import annotations

import os
import socket
from contextlib import suppress
from pathlib import Path

from orthoxfer.errors import OrthoxferError, UsageError

PREFIX = "hf-hub:"
HOST = "huggingface.co"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def reachable(host: str, timeout: float = 3.0) -> bool:
    """A quick probe so that an offline machine fails in milliseconds instead of a minute of HTTP retries.

    Behind a proxy the direct probe says nothing, so it is skipped there.
    """
    if any(os.environ.get(v) for v in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")):
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def cache_folder(cache_dir: Path | None) -> Path:
    """The Hugging Face cache a download goes to: ``--cache-dir`` when given (as open_clip uses it), else the hub's own."""
    if cache_dir is not None:
        return cache_dir
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def fetch_command(repo: str, filename: str, cache_dir: Path | None) -> str:
    return f"hf download {repo} {filename} --cache-dir {cache_folder(cache_dir)}"


def cached_file(repo: str, filename: str, cache_dir: Path | None) -> Path | None:
    """The file from the local cache, or None; never touches the network."""
    from huggingface_hub import hf_hub_download

    cache = str(cache_dir) if cache_dir is not None else None
    with suppress(Exception):  # any miss (no repo, no file, no snapshot) means "not cached"
        return Path(hf_hub_download(repo, filename, cache_dir=cache, local_files_only=True))
    return None


def hub_file(repo: str, filenames: list[str], cache_dir: Path | None = None) -> Path:
    """The first of ``filenames`` (alternatives, best first) found in ``repo``: cached, else downloaded, else one line."""
    from huggingface_hub import hf_hub_download

    for filename in filenames:
        if (path := cached_file(repo, filename, cache_dir)) is not None:
            return path
    if offline():
        why = "HF_HUB_OFFLINE is set"
    elif not reachable(HOST):
        why = f"{HOST} is unreachable"
    else:
        for filename in filenames:
            try:
                return Path(
                    hf_hub_download(repo, filename, cache_dir=str(cache_dir) if cache_dir is not None else None)
                )
            except Exception as exc:  # noqa: BLE001 - the hub raises many types; the first line says which
                why = f"Hugging Face: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    others = f" (or {', '.join(filenames[1:])} in its place)" if len(filenames) > 1 else ""
    raise OrthoxferError(
        f"{repo}/{filenames[0]} is not in the Hugging Face cache {cache_folder(cache_dir)} and could not be downloaded "
        f"({why}): fetch it where the network is available with `{fetch_command(repo, filenames[0], cache_dir)}`{others} "
        f"and copy that folder here"
    )


def parse(spec: str) -> tuple[str, str | None]:
    """``hf-hub:owner/repo[/path/in/repo]`` -> ``("owner/repo", "path/in/repo" or None)``."""
    owner, _, rest = spec.removeprefix(PREFIX).partition("/")
    repo_name, _, path = rest.partition("/")
    if not spec.startswith(PREFIX) or not owner or not repo_name:
        raise UsageError(f"{spec!r} must be hf-hub:owner/repo or hf-hub:owner/repo/path/to/file")
    return f"{owner}/{repo_name}", path or None
