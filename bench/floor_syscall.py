"""Pure-syscall reference for the floor (scripts/bench --prototype floor): what one send() of a WebSocket-sized
message on a loopback TCP socket costs on this machine, with the reader in another process on the other core, and
what one recv() of such a message costs the reader. No event loop, no WebSocket framing: the kernel's share of a
message, which no Python (or any) gateway relaying over TCP avoids.

    python -m bench.floor_syscall '{"reader_core": 1, "sizes": [300, 1300], "n": 100000}'

Run by scripts/bench pinned (and scheduled) like the gateway; the reader pins itself to ``reader_core``. Prints
one JSON line: per size, CPU µs per send() (writer) and per recv() (reader), the Python loop's own cost per
iteration (already included in both figures; subtract it for the syscall alone), and wall µs per send.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any


def _reader(sock: socket.socket, size: int, total: int, core: int | None, out_fd: int) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    conn, _ = sock.accept()
    buf = bytearray(size)
    got = calls = 0
    c0 = time.process_time()
    while got < total:
        n = conn.recv_into(buf, size)
        if not n:
            break
        got += n
        calls += 1
    c1 = time.process_time()
    os.write(out_fd, json.dumps({"recv_calls": calls, "recv_cpu_s": c1 - c0}).encode())
    conn.close()


def measure(size: int, n: int, reader_core: int | None) -> dict[str, Any]:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the reader
        try:
            os.close(r)
            _reader(lsock, size, size * n, reader_core, w)
        finally:
            os._exit(0)
    os.close(w)
    s = socket.create_connection(lsock.getsockname())
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as aiohttp sets on both sides
    msg = bytes(size)
    send = s.send
    for _ in range(2000):  # warm up the connection (window growth) before timing
        send(msg)
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n - 2000):
        send(msg)
    c1, t1 = time.process_time(), time.perf_counter()
    s.close()
    os.waitpid(pid, 0)
    res = json.loads(os.read(r, 4096) or b"{}")
    os.close(r)
    lsock.close()
    # The Python loop alone (a call of a C function per iteration), for reference.
    f = len
    l0 = time.process_time()
    for _ in range(n):
        f(msg)
    loop_us = (time.process_time() - l0) / n * 1e6
    timed = n - 2000
    return {
        "size": size,
        "sends": timed,
        "send_cpu_us": round((c1 - c0) / timed * 1e6, 3),
        "send_wall_us": round((t1 - t0) / timed * 1e6, 3),
        "recv_calls": res.get("recv_calls"),
        "recv_cpu_us": round(res["recv_cpu_s"] / res["recv_calls"] * 1e6, 3) if res.get("recv_calls") else None,
        "python_loop_us": round(loop_us, 3),
    }


def main() -> None:
    plan = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    core = plan.get("reader_core")
    n = int(plan.get("n", 100000))
    rows = [measure(int(size), n, core) for size in plan.get("sizes", [300, 1300])]
    print(json.dumps({"kind": "syscall", "rows": rows}))


if __name__ == "__main__":
    main()
