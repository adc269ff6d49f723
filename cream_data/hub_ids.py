"""Hugging Face Hub repository ids (``owner/name``): one check for models, datasets and ``--repo-id``.

Built on huggingface_hub's own validator (:func:`huggingface_hub.utils.validate_repo_id`: word characters, ``-``
and ``.``; no ``--`` or ``..``; no leading or trailing ``-``/``.``; at most 96 characters; not ending in
``.git``) plus one rule of cream's: the owner is required. A bare ``name`` is a legacy Hub id, but here it is far
more often a typo of a local folder or of an alias, and must not become a download. Used by
:mod:`cream_data.engines.models` (``--model``) and :mod:`cream_data.publish.hub` (``--repo-id``, a dataset to
read back); it imports nothing from cream_data but its errors, so every layer may import it.
"""

from __future__ import annotations

from cream_data.errors import CreamError

OWNER_NAME = "owner/name"


def repo_id_problem(text: str) -> str | None:
    """Why ``text`` is not an ``owner/name`` Hub id (the validator's first line), or None when it is one."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError as e:
        return (str(e).splitlines() or ["not a Hub repository id"])[0]
    if "/" not in text:
        return f"expected {OWNER_NAME} (e.g. your-user/cream-prefs)"
    return None


def is_repo_id(text: str) -> bool:
    """True when ``text`` is a valid ``owner/name`` Hub id."""
    return repo_id_problem(text) is None


def check_repo_id(text: str, *, what: str = "--repo-id") -> str:
    """``text`` itself when it is a valid ``owner/name`` Hub id; else a one-line :class:`CreamError` naming ``what``."""
    problem = repo_id_problem(text)
    if problem is not None:
        raise CreamError(f"{what} {text!r}: {problem}")
    return text
