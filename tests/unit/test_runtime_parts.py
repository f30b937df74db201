"""sd_notify over real unix datagram sockets (path and abstract), latest-value mailboxes."""

import os
import socket
import threading
import time

import pytest

from edge.mailbox import Mailbox
from edge.sd_notify import Notifier


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_reaches_socket(tmp_path, abstract):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"vla-edge-test-{os.getpid()}"
        srv.bind("\0" + name)
        addr = "@" + name
    else:
        addr = str(tmp_path / "notify.sock")
        srv.bind(addr)
    srv.settimeout(1.0)
    n = Notifier(addr, watchdog_usec=2_000_000)
    assert n.ready("engines loaded") and n.watchdog()
    assert srv.recv(256) == b"READY=1\nSTATUS=engines loaded"
    assert srv.recv(256) == b"WATCHDOG=1"
    assert n.watchdog_interval_s() == 1.0
    srv.close()


def test_notifier_without_systemd_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier.from_env()
    assert not n.enabled and not n.ready()
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        Notifier("relative/path")


def test_mailbox_latest_value_and_freshness():
    box: Mailbox[int] = Mailbox()
    assert box.get_fresh(100) is None
    box.put(1)
    box.put(2)
    assert box.get()[0] == 2 and box.get()[2] == 2
    assert box.get_fresh(100) == 2
    box.put(3, t_mono=time.monotonic() - 1.0)
    assert box.get_fresh(100) is None
    v0 = box.get()[2]
    threading.Timer(0.05, lambda: box.put(4)).start()
    value, _, version = box.wait_newer(v0, 1.0)
    assert value == 4 and version == v0 + 1
