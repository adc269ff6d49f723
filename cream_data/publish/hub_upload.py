"""Upload a folder built by :func:`cream_data.publish.hub.build` to a Hugging Face Hub dataset repository.

The upload is huggingface_hub's: ``HfApi.create_repo(exist_ok=True)`` then ``HfApi.upload_folder``. With
huggingface_hub 2.x and ``hf_xet`` (installed with it on x86-64 and arm64) the library retries transient
failures itself — network errors and HTTP 408/429/5xx, with exponential backoff — on the pre-upload check, the
file transfer and the commit; ``create_repo`` and the Hub's check of the card's YAML are single requests that
send no data and are not retried (nor is the commit on the library's fallback path without ``hf_xet``). When
an upload still fails, rerunning the same command resumes it: the rebuilt folder is byte-identical (same tables,
same files), the Hub reports which files it already holds with the same content and those are neither sent nor
committed again, and data already transferred is deduplicated by content. A large folder may be committed in
several commits, the later ones titled ``cream publish (part N)``; a rerun completes an interrupted one. A republish
adds and overwrites files; it deletes nothing already in the repository.
The token is passed to ``huggingface_hub`` and nowhere else: never printed, logged or written.
"""

from __future__ import annotations

from pathlib import Path

from cream_data.errors import CreamError

UPLOAD_IGNORE = (".*", "*/.*")  # huggingface_hub patterns (fnmatch: * spans /): hidden files and folders
COMMIT_MESSAGE = "cream publish"


def get_token() -> str:
    """The user's Hub token (HF_TOKEN or the stored login); a one-line error when there is none."""
    import huggingface_hub

    try:
        token = huggingface_hub.get_token()
    except Exception as e:  # an OIDC exchange the user opted into failed
        raise CreamError(f"could not get a Hugging Face token ({type(e).__name__})") from None
    if not token:
        raise CreamError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)")
    return token


def _network_errors() -> tuple[type, ...]:
    """Failures of the network rather than of the request: the HTTP client's transport errors (httpx2 under
    huggingface_hub 2.x, httpx under 1.x) and the builtin ones."""
    import importlib

    found: list[type] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def hub_error(err: Exception, repo_id: str, token: str) -> CreamError:
    """One line for a failed upload, by huggingface_hub's error classes; the token never appears in it."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    if isinstance(err, OfflineModeIsEnabled):
        return CreamError("HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it, or use --dry-run")
    status = err.response.status_code if isinstance(err, HfHubHTTPError) else None
    server = ((getattr(err, "server_message", None) or "").splitlines() or [""])[0].replace(token, "***")[:160]
    said = f": {server}" if server else ""
    if isinstance(err, RepositoryNotFoundError):
        return CreamError(f"the Hub has no dataset {repo_id} that this token can write to (HTTP {status}{said}): "
                          "check --repo-id, and that the token belongs to its owner or has write access to it")
    if status == 401:
        return CreamError("the Hub rejected the token (HTTP 401): set a valid HF_TOKEN or run `hf auth login`")
    if status == 403:
        return CreamError(f"the token may not write to {repo_id} (HTTP 403{said}): use a token with write access")
    first = (str(err).splitlines() or [""])[0].replace(token, "***")[:200]
    if isinstance(err, _network_errors()) or status in (408, 429) or (status or 0) >= 500:
        return CreamError(f"upload to {repo_id} failed ({type(err).__name__}: {first}); rerun the same command to "
                          "resume: files the Hub already holds are not sent again")
    return CreamError(f"upload to {repo_id} failed ({type(err).__name__}: {first})")


def upload(folder: str | Path, repo_id: str, *, token: str, private: bool = False,
           endpoint: str | None = None) -> str:
    """Create the dataset repository if needed (``HfApi.create_repo(exist_ok=True)``) and upload the folder with
    ``HfApi.upload_folder``; returns the dataset URL. Retries, batching and resuming are huggingface_hub's."""
    from huggingface_hub import HfApi

    api = HfApi(token=token, endpoint=endpoint)
    try:
        # private=None lets the Hub apply the owner's default visibility unless --private asks for private
        url = api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="dataset",
                          commit_message=COMMIT_MESSAGE, ignore_patterns=list(UPLOAD_IGNORE))
    except Exception as e:
        raise hub_error(e, repo_id, token) from None
    return str(url)
