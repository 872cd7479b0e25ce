#!/usr/bin/env python3
"""aiosmtpd as a peer in make bench (scripts/bench.py, W6).

  aiosmtpd_peer.py PORT CERT KEY

Listens on 127.0.0.1:PORT, offers STARTTLS with CERT and KEY, takes every
sender and recipient, and parses each message with Python's email package
(its subject read), as luasmtpd's bench script parses and reads one.
"""
import asyncio
import email
import email.policy
import ssl
import sys

from aiosmtpd.smtp import SMTP


class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        msg.get("subject")
        return "250 OK"


async def serve(port, cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Handler(), hostname="bench.test", tls_context=ctx, require_starttls=False),
        "127.0.0.1", port, backlog=1024)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
