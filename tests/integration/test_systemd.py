"""gristd under systemd's notify protocol (deploy/systemd/gristd.service,
Type=notify): a real NOTIFY_SOCKET receives READY=1 (with a STATUS) only
once the listeners are bound, WATCHDOG=1 at half the WATCHDOG_USEC period
from the event loop, and none while the loop is stopped (SIGSTOP), then
RELOADING=1/READY=1 around SIGHUP and STOPPING=1 at SIGTERM. The unit
passes `systemd-analyze verify` with ExecStart pointed at this build.

    /usr/bin/python3 tests/integration/test_systemd.py build/daemon/gristd
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")


def recv_all(sock, seconds):
    """Every datagram within `seconds`: (arrival time, text)."""
    out, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append((time.monotonic(), sock.recv(4096).decode()))
        except socket.timeout:
            break
    return out


def main():
    gristd = os.path.abspath(sys.argv[1])
    if "GRIST_HAVE_SYSTEMD 1" not in open(os.path.join(os.path.dirname(gristd), "..",
                                                          "grist_config.h")).read():
        print("gristd was built without libsystemd (deploy/setup.sh installs libsystemd-dev)")
        return 1
    tmp = tempfile.mkdtemp(prefix="grist-sd-")
    path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
    proc = subprocess.Popen([gristd, "--listen", "unix:" + os.path.join(tmp, "g.sock"),
                             "--log-level", "warn"], env=env)
    try:
        msgs = recv_all(sock, 1.5)
        texts = [m for _, m in msgs]
        ready = [m for m in texts if m.startswith("READY=1")]
        assert ready and "STATUS=serving on unix:" in ready[0], texts
        assert os.path.exists(os.path.join(tmp, "g.sock")), "READY before the listener existed"
        pings = [t for t, m in msgs if m == "WATCHDOG=1"]
        # 200 ms period: a ping every 100 ms from the loop
        assert len(pings) >= 8, (len(pings), texts[:5])
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 0.2, gaps
        proc.send_signal(signal.SIGSTOP)  # a loop that does not turn does not ping
        assert not [m for _, m in recv_all(sock, 0.5) if m == "WATCHDOG=1"]
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGHUP)
        texts = [m for _, m in recv_all(sock, 0.5) if m != "WATCHDOG=1"]
        assert texts[:2] == ["RELOADING=1", "READY=1"], texts
        proc.send_signal(signal.SIGTERM)
        texts = [m for _, m in recv_all(sock, 1.0) if m != "WATCHDOG=1"]
        assert "STOPPING=1" in texts, texts
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"notify: READY=1 after bind, {len(pings)} watchdog pings in 1.5 s (largest gap "
          f"{max(gaps) * 1000:.0f} ms), none while stopped, RELOADING/READY on SIGHUP, "
          "STOPPING=1 at SIGTERM")
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("systemd-analyze missing: Debian's systemd package provides it")
        return 1
    unit = open(os.path.join(ROOT, "deploy", "systemd", "gristd.service")).read()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "DynamicUser=yes" in unit
    assert "ExecStart=/usr/local/bin/gristd " in unit, "the unit runs the installed binary"
    mine = os.path.join(tmp, "gristd.service")
    with open(mine, "w") as f:
        f.write(unit.replace("/usr/local/bin/gristd", gristd))
    p = subprocess.run([analyze, "verify", mine], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr.strip(), (p.returncode, p.stderr)
    print("unit: systemd-analyze verify passes (ExecStart pointed at this build)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
