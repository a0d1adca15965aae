#!/usr/bin/env python3
"""Open N idle PostgreSQL connections and hold them; used by benches/pgbench.sh.

Speaks just enough of the wire protocol (v3.0) for trust authentication:
StartupMessage -> AuthenticationOk, ParameterStatus*, BackendKeyData,
ReadyForQuery. Standard library only.

Once every connection has reached ReadyForQuery, the script writes "ready N"
to --ready-file (and stdout), then holds the sockets open until it receives
SIGTERM/SIGINT or --hold seconds pass. On exit it sends Terminate on each.

Exit status: 0 on success, 1 if any connection failed (the error is printed).
"""
import argparse
import resource
import selectors
import signal
import socket
import struct
import sys
import time

PROTOCOL_3_0 = 196608


def startup_message(user: str, database: str) -> bytes:
    body = struct.pack("!i", PROTOCOL_3_0)
    for key, value in (("user", user), ("database", database), ("application_name", "idle_conns")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


class Conn:
    """One connection's state while it is being established."""

    def __init__(self, host, port, startup):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setblocking(False)
        self.out = startup
        self.inbuf = b""
        self.ready = False

    def on_writable(self):
        n = self.sock.send(self.out)
        self.out = self.out[n:]

    def on_readable(self):
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("connection closed during startup")
        self.inbuf += data
        while len(self.inbuf) >= 5:
            tag = self.inbuf[0:1]
            (length,) = struct.unpack("!i", self.inbuf[1:5])
            if len(self.inbuf) < 1 + length:
                return
            body = self.inbuf[5 : 1 + length]
            self.inbuf = self.inbuf[1 + length :]
            if tag == b"E":
                fields = [f.decode(errors="replace") for f in body.split(b"\0") if f]
                raise RuntimeError("server error: " + "; ".join(fields))
            if tag == b"R":
                (code,) = struct.unpack("!i", body[:4])
                if code != 0:
                    raise RuntimeError(f"server asked for authentication (code {code}); use trust auth")
            elif tag == b"Z":
                self.ready = True
            # 'S' ParameterStatus, 'K' BackendKeyData, 'N' NoticeResponse: ignore.


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--database", default="postgres")
    ap.add_argument("-n", "--count", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=50, help="connections in flight at once during startup")
    ap.add_argument("--hold", type=float, default=300, help="seconds to hold the connections at most")
    ap.add_argument("--ready-file", help="write 'ready N' here once all connections are ready")
    args = ap.parse_args()

    # Each connection is one descriptor here; make sure we may open enough.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    stop = {"flag": False}

    def on_signal(_signum, _frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    startup = startup_message(args.user, args.database)
    done = []
    sel = selectors.DefaultSelector()
    pending = 0
    started = time.monotonic()
    try:
        while len(done) < args.count:
            if stop["flag"]:
                raise RuntimeError("interrupted")
            # Keep up to --batch connections in startup at once.
            while pending < args.batch and len(done) + pending < args.count:
                c = Conn(args.host, args.port, startup)
                sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
                pending += 1
            for key, events in sel.select(timeout=30):
                c = key.data
                if events & selectors.EVENT_WRITE and c.out:
                    c.on_writable()
                    if not c.out:
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                if events & selectors.EVENT_READ:
                    c.on_readable()
                if c.ready:
                    sel.unregister(c.sock)
                    pending -= 1
                    done.append(c)
            if time.monotonic() - started > 300:
                raise RuntimeError(f"timed out with {len(done)} of {args.count} connections ready")
    except Exception as e:  # noqa: BLE001 - report any failure plainly
        print(f"idle_conns: failed after {len(done)} ready connections: {e}", file=sys.stderr)
        return 1

    msg = f"ready {len(done)}"
    print(msg, flush=True)
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(msg + "\n")

    deadline = time.monotonic() + args.hold
    while not stop["flag"] and time.monotonic() < deadline:
        time.sleep(0.2)

    terminate = b"X" + struct.pack("!i", 4)
    for c in done:
        try:
            c.sock.setblocking(True)
            c.sock.sendall(terminate)
            c.sock.close()
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
