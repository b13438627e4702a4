#!/usr/bin/env python3
"""A real SMTP server on loopback for the tests (aiosmtpd).

Mailboxes whose name starts with "reject" are refused (550, quoting the address).
Every message received is written to DIR as an .eml file (atomically, so a reader never
sees half a message). Prints the port it listens on, then serves until stdin closes.
"""
import argparse
import os
import socket
import sys
import uuid

from aiosmtpd.controller import Controller


class Saver:
    def __init__(self, directory):
        self.directory = directory

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # Refuses mailboxes named reject…@ the way Postfix does, quoting the address.
        if address.lower().startswith("reject"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(self.directory, f"{uuid.uuid4()}.eml")
        with open(name + ".tmp", "wb") as f:
            f.write(("X-Envelope-From: %s\r\n" % envelope.mail_from).encode())
            f.write(("X-Envelope-To: %s\r\n" % ",".join(envelope.rcpt_tos)).encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(name + ".tmp", name)
        return "250 Message accepted for delivery"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    port = free_port()
    controller = Controller(Saver(args.dir), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
