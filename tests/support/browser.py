"""Headless Chromium for the pages `cream browse` writes: find (or install) it, open a page, read what it shows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str:
    """A headless Chromium: found on PATH, else Debian's `chromium` installed when we are root with apt-get; a
    pytest skip with the reason when neither works."""
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium/chromium-browser/google-chrome on PATH and not root with apt-get to install it")
    try:
        subprocess.run("apt-get update -qq && apt-get install -y -q chromium", shell=True, check=True,
                       capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"could not install Debian's chromium ({type(e).__name__})")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but it is not on PATH")
    return found


def dump_dom(chromium: str, page: Path, hash_: str = "") -> str:
    """The page's DOM after its scripts ran, opened with ``#hash_`` (the page reads its filters from the hash)."""
    url = page.resolve().as_uri() + (f"#{hash_}" if hash_ else "")
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--window-size=1400,1000", "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def shown_count(dom: str) -> tuple[int, int, int]:
    """(pairs matching, pairs in all, rows drawn) as the opened page shows them."""
    m = re.search(r'id="count" data-shown="(\d+)" data-total="(\d+)"', dom)
    assert m, dom[-3000:]
    return int(m.group(1)), int(m.group(2)), dom.count('<article class="pair"')
