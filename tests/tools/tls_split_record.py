#!/usr/bin/env python3
"""tls_split_record.py - a TLS client for the proxy's integration tests whose record arrives
in two pieces, after another client's refused handshake on the same proxy worker.

    tls_split_record.py PORT NAME CA CERT KEY

1. Session B: a verified mTLS session to 127.0.0.1:PORT (server name NAME), with one echoed
   round trip to show it relays.
2. Client A, on the same port, offers no certificate and is refused. OpenSSL leaves the
   reasons for that refusal in the error queue of the worker thread that ran it.
3. B sends one TLS record split in two TCP writes, 0.5 s apart. The proxy's read of the
   first piece cannot finish the record and would block; if the worker judged that with
   A's stale errors still queued, it would take "would block" for an error and close B.
4. B must get its message echoed back whole.

Exit 0 with "split record echoed" on stdout, else a message on stderr and exit 1. The
upstream behind PORT must echo.
"""
import socket
import ssl
import sys
import time


def main():
    port, name, ca, cert, key = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)

    def flush():
        data = outgoing.read()
        if data:
            sock.sendall(data)

    def until_done(step):
        while True:
            try:
                return step()
            except ssl.SSLWantReadError:
                flush()
                data = sock.recv(65536)
                if not data:
                    raise EOFError("the proxy closed session B")
                incoming.write(data)

    def read_exactly(n):
        got = b""
        while len(got) < n:
            got += until_done(lambda: tls.read(n - len(got)))
        return got

    until_done(tls.do_handshake)
    flush()
    tls.write(b"first")
    flush()
    if read_exactly(5) != b"first":
        raise SystemExit("session B: the first round trip came back wrong")

    # Client A: no certificate. In TLS 1.3 the refusal arrives after the client's side of
    # the handshake is done, as an alert on the first read.
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.load_verify_locations(ca)
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as raw:
            with bare.wrap_socket(raw, server_hostname=name) as refused:
                refused.recv(1)
        raise SystemExit("client A without a certificate was not refused")
    except (ssl.SSLError, ConnectionError, OSError):
        pass
    time.sleep(0.3)

    message = b"second, in two pieces"
    tls.write(message)
    record = outgoing.read()
    sock.sendall(record[:7])
    time.sleep(0.5)
    sock.sendall(record[7:])
    if read_exactly(len(message)) != message:
        raise SystemExit("session B: the split record came back wrong")
    print("split record echoed")


if __name__ == "__main__":
    try:
        main()
    except (EOFError, OSError, ssl.SSLError) as e:
        sys.stderr.write("tls_split_record: %s\n" % e)
        sys.exit(1)
