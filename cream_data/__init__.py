"""cream_data: the labeling half of cream — tables, inputs, ranking and consistency, pairing, SQL, Hub.

Importing this package never imports torch: engines that run models live in ``cream_data.engines``
and import torch / transformers / vllm lazily. ``cream_data.api`` runs each stage from Python (docs/API.md).
"""

from cream_data.errors import CreamError

# The distribution's name on an index (`cream` on PyPI is an unrelated project); the console script is `cream`.
DISTRIBUTION = "cream-align"

__all__ = ["CreamError", "DISTRIBUTION", "installed_version"]


def installed_version(package: str) -> str | None:
    """The installed version of ``package`` (``cream`` means this distribution), None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION if package == "cream" else package)
    except PackageNotFoundError:
        return None
