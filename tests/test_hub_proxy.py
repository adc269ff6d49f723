"""The Hub reachability probe of `cream prompts owner/dataset` goes through the HTTP client's proxy settings.

Loopback only: a tiny HTTP proxy on 127.0.0.1 records what it is asked and answers itself (200 to a plain-HTTP
request, 502 to a CONNECT: it never opens a connection anywhere). Nothing reaches the network.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cream_data.errors import CreamError
from tests.support.cli import assert_user_error

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
              "no_proxy")


class _Proxy(BaseHTTPRequestHandler):
    seen: list[str]

    def _answer(self, code: int) -> None:
        self.server.seen.append(self.requestline)  # type: ignore[attr-defined]
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def do_HEAD(self):  # noqa: N802 (http.server's naming)
        self._answer(200)

    def do_GET(self):  # noqa: N802
        self._answer(200)

    def do_CONNECT(self):  # noqa: N802: no tunnel is ever opened: the upstream "cannot be reached"
        self._answer(502)

    def log_message(self, *args):
        pass


@contextmanager
def local_proxy():
    """A recording proxy on 127.0.0.1; yields (url, list of request lines). Stopped and closed on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub_env(monkeypatch):
    """Online mode, no proxy variables inherited, and huggingface_hub's shared client rebuilt from this environment
    (it reads the proxy variables when it is created) before and after the test."""
    import huggingface_hub
    from huggingface_hub import constants

    for v in PROXY_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    huggingface_hub.close_session()
    yield monkeypatch, constants
    huggingface_hub.close_session()


def test_the_probe_goes_through_the_proxy(hub_env):
    import huggingface_hub
    from cream_data.inputs.records import _hub_reachable

    monkeypatch, constants = hub_env
    endpoint = f"http://127.0.0.1:{dead_port()}"  # nothing listens there: only the proxy can answer for it
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    with local_proxy() as (proxy, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        huggingface_hub.close_session()
        _hub_reachable("owner/dataset")  # reached: the proxy answered
        assert seen == [f"HEAD {endpoint}/ HTTP/1.1"]

        # NO_PROXY is honoured too: then the request goes straight to the dead port and fails in one line
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        huggingface_hub.close_session()
        with pytest.raises(CreamError) as err:
            _hub_reachable("owner/dataset")
        assert seen == [f"HEAD {endpoint}/ HTTP/1.1"]  # not asked again
    msg = str(err.value)
    assert "\n" not in msg and endpoint in msg and "cannot be reached" in msg and "proxy in" not in msg


def test_a_proxy_that_cannot_reach_the_hub_is_one_line(hub_env, tmp_path, cream_exe):
    """Through the installed console script: HTTPS to the default endpoint is tunnelled (CONNECT) via the proxy."""
    with local_proxy() as (proxy, seen):
        env = {**{v: "" for v in PROXY_VARS}, "HTTPS_PROXY": proxy, "https_proxy": proxy, "HF_HUB_OFFLINE": "0",
               "HF_ENDPOINT": "https://huggingface.co"}  # (an empty https_proxy would unset HTTPS_PROXY)
        start = time.monotonic()
        r = cream_exe("prompts", "owner/dataset", "--out", tmp_path / "p", env=env, timeout=90)
        elapsed = time.monotonic() - start
    assert seen == ["CONNECT huggingface.co:443 HTTP/1.1"], r  # the probe asked the proxy, and nothing else ran
    assert_user_error(r, "owner/dataset", "https://huggingface.co", "cannot be reached", "HTTPS_PROXY")
    assert not (tmp_path / "p").exists()
    assert elapsed < 60


def test_a_dead_proxy_is_one_line_naming_the_endpoint(tmp_path, cream_exe):
    proxy = f"http://user:secret@127.0.0.1:{dead_port()}"
    env = {**{v: "" for v in PROXY_VARS}, "HTTPS_PROXY": proxy, "https_proxy": proxy, "HF_HUB_OFFLINE": "0",
           "HF_ENDPOINT": "https://huggingface.co"}
    start = time.monotonic()
    r = cream_exe("prompts", "owner/dataset", "--out", tmp_path / "p", env=env, timeout=90)
    assert time.monotonic() - start < 60
    assert_user_error(r, "owner/dataset", "Hugging Face Hub (https://huggingface.co) cannot be reached",
                      "through the proxy in HTTPS_PROXY")
    assert "refused" in r.err  # the dead proxy refused: the Hub's name was never looked up or connected to directly
    assert "secret" not in r.err  # the proxy's password is never shown
    assert not (tmp_path / "p").exists()


def test_offline_mode_makes_no_probe(hub_env):
    import huggingface_hub
    from cream_data.inputs.records import _hub_reachable

    monkeypatch, constants = hub_env
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with local_proxy() as (proxy, seen):
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        monkeypatch.setenv("HTTP_PROXY", proxy)
        huggingface_hub.close_session()
        _hub_reachable("owner/dataset")
    assert seen == []
