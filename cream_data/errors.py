"""User-facing errors: one line that names the file/row/field and what was expected."""

from __future__ import annotations


class CreamError(Exception):
    """A user mistake (bad file, missing column, wrong type, unknown model, empty input).

    The CLI prints ``error: <message>`` on one line and exits with code 2; no traceback.
    Messages name the place (file, row, field) and what was expected.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class SchemaError(CreamError):
    """A table that does not match its schema; carries every violation found."""

    def __init__(self, where: str, violations: list[str]):
        self.where = where
        self.violations = list(violations)
        shown = "; ".join(self.violations[:8])
        more = f"; … and {len(self.violations) - 8} more" if len(self.violations) > 8 else ""
        super().__init__(f"{where}: {len(self.violations)} schema violation(s): {shown}{more}")


def install_extra(extra: str) -> str:
    """How a user adds one of cream's extras: cream installs from its checkout (`pip install -e .`; the
    distribution is named cream-align, since `cream` on PyPI is another project)."""
    return f"pip install -e '.[{extra}]' in the cream checkout"


def missing_package(package: str, purpose: str, install: str | None = None) -> CreamError:
    """The error for an optional dependency that is not installed."""
    hint = install or f"pip install {package}"
    return CreamError(f"{purpose} needs the '{package}' package, which is not installed: run `{hint}`")
