"""The page of `cream browse`: the records of :mod:`cream_data.reports.browse` embedded in ``browse_page.html``.

The page is one self-contained file: its CSS and JavaScript are inline and the data is a JSON document in a
``<script type="application/json">`` element, so it opens from disk with no server and fetches nothing. The JSON
is escaped for that place: every ``<``, ``>`` and ``&`` is written as a ``\\u00XX`` escape (still the same JSON
string), so no text inside a response — ``</script>``, ``<!--`` — can end the element early; U+2028 and U+2029
are escaped too.

The output path is checked before any table is read (:func:`check_out`) and the page is written atomically: it
is built in a hidden temporary file beside the target and renamed into place, so a failed write leaves nothing.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from cream_data.errors import CreamError
from cream_data.tables import io

ASSET = "browse_page.html"
DATA_SLOT = "/*CREAM_DATA*/"
GENERATOR = '<meta name="generator" content="cream browse">'
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embedded_json(data: dict) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element (see the module docstring)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.translate(str.maketrans(_ESCAPES))


def page(data: dict) -> str:
    """The whole HTML page holding ``data``."""
    template = resources.files("cream_data.reports").joinpath(ASSET).read_text(encoding="utf-8")
    if template.count(DATA_SLOT) != 1 or GENERATOR not in template:
        raise RuntimeError(f"{ASSET}: the page template lacks its data slot or generator tag")
    return template.replace(DATA_SLOT, embedded_json(data))


def is_browse_page(path: Path) -> bool:
    """A file `cream browse` wrote: its generator tag within the first 4 KiB."""
    try:
        with open(path, "rb") as f:
            return GENERATOR.encode() in f.read(4096)
    except OSError:
        return False


def check_out(out: Path) -> Path:
    """``--out`` must name a file: a new one or a page `cream browse` wrote before, in a folder this process can
    write in (one line naming the flag otherwise)."""
    from cream_data.jsonfile import not_a_file
    from cream_data.tables.outputs import check_writable

    if out.exists():
        why = not_a_file(out, "an HTML file to write (e.g. --out pairs.html)")
        if why is not None:
            raise CreamError(f"--out {out}: {why}")
        if not is_browse_page(out):
            raise CreamError(f"--out {out}: is an existing file that is not a `cream browse` page; choose a new "
                             "path — cream never replaces other files")
        if not os.access(out.parent, os.W_OK | os.X_OK):  # the page is replaced by a rename in its folder
            raise CreamError(f"--out {out}: cannot write in {out.parent} (permission denied or read-only)")
    else:
        check_writable(out, "--out")
    return out


def write_page(data: dict, out: Path) -> int:
    """Write the page atomically; return its size in bytes."""
    body = page(data).encode("utf-8")
    io.atomic_write_bytes(out, body)
    return len(body)
