#!/usr/bin/python3
"""Network probes for tests/network.rs, run inside the sandbox: each step prints one
`KEY RESULT` line, flushed at once, so the test can read results while a server runs.

    python3 net.py STEP [STEP...]

Steps:

    ifaces                      `ifaces NAME...`: this network namespace's interfaces, sorted
    loopback                    `loopback ok|ERRNO`: TCP listen and connect on 127.0.0.1
    tcp HOST PORT [SECONDS]     connect, send `ping`, read one line back:
                                `tcp:HOST:PORT ok REPLY`, `tcp:HOST:PORT closed` (accepted,
                                then closed without a reply) or `tcp:HOST:PORT ERRNO`
    udp HOST PORT [SECONDS]     send `ping` (again every half second) until a datagram comes
                                back: `udp:HOST:PORT ok REPLY`, `... timeout` or `... ERRNO`
    serve tcp|udp PORT TOKEN    listen on 0.0.0.0:PORT, print `listening PROTO PORT`, answer
                                each request LINE with `TOKEN LINE` until stdin closes (or
                                two minutes pass), then print `served N`

ERRNO is the errno's name (ECONNREFUSED, EACCES, ...), or `timeout`. SECONDS defaults to 10.
"""

import errno
import os
import select
import socket
import sys
import time


def out(line):
    print(line, flush=True)


def err_name(e):
    if isinstance(e, socket.timeout) or e.errno is None:
        return "timeout"
    return errno.errorcode.get(e.errno, str(e.errno))


def ifaces():
    with open("/proc/net/dev") as f:
        names = [l.split(":", 1)[0].strip() for l in f.readlines()[2:] if ":" in l]
    out("ifaces " + " ".join(sorted(names)))


def loopback():
    try:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        c = socket.create_connection(s.getsockname(), timeout=5)
        a, _ = s.accept()
        c.sendall(b"x")
        a.recv(1)
        out("loopback ok")
    except OSError as e:
        out("loopback " + err_name(e))


def tcp(host, port, seconds):
    key = f"tcp:{host}:{port}"
    try:
        s = socket.create_connection((host, int(port)), timeout=seconds)
        s.sendall(b"ping\n")
        reply = s.makefile("rb").readline().decode().strip()
        out(f"{key} ok {reply}" if reply else f"{key} closed")
    except OSError as e:
        out(f"{key} {err_name(e)}")


def udp(host, port, seconds):
    key = f"udp:{host}:{port}"
    deadline = time.monotonic() + seconds
    try:
        s = socket.socket(type=socket.SOCK_DGRAM)
        s.connect((host, int(port)))
        while time.monotonic() < deadline:
            s.send(b"ping\n")
            ready, _, _ = select.select([s], [], [], 0.5)
            if ready:
                out(f"{key} ok " + s.recv(4096).decode().strip())
                return
        out(f"{key} timeout")
    except OSError as e:
        out(f"{key} {err_name(e)}")


def serve(proto, port, token):
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(type=kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    if proto == "tcp":
        s.listen(16)
    out(f"listening {proto} {port}")
    served = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s, sys.stdin], [], [], 1)
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
            break
        if s not in ready:
            continue
        if proto == "tcp":
            conn, _ = s.accept()
            conn.settimeout(10)
            try:
                line = conn.makefile("rb").readline().decode().strip()
                conn.sendall(f"{token} {line}\n".encode())
                served += 1
            except OSError:
                pass
            conn.close()
        else:
            data, peer = s.recvfrom(4096)
            s.sendto(f"{token} {data.decode().strip()}\n".encode(), peer)
            served += 1
    out(f"served {served}")


def main(args):
    while args:
        step, args = args[0], args[1:]
        if step == "ifaces":
            ifaces()
        elif step == "loopback":
            loopback()
        elif step in ("tcp", "udp"):
            host, port, args = args[0], args[1], args[2:]
            seconds = 10.0
            if args and args[0].replace(".", "", 1).isdigit():
                seconds, args = float(args[0]), args[1:]
            (tcp if step == "tcp" else udp)(host, port, seconds)
        elif step == "serve":
            serve(args[0], args[1], args[2])
            args = args[3:]
        else:
            out(f"unknown-step {step}")
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
