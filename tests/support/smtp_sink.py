#!/usr/bin/env python3
"""A real SMTP server on loopback for the tests (aiosmtpd).

Mailboxes whose name starts with "reject" are refused (550, quoting the address; in
capitals for "reject-shouting").
Every message received is written to DIR as an .eml file (atomically, so a reader never
sees half a message). Prints the port it listens on, then serves until stdin closes.
--start-down answers every MAIL with 421 (a server that is unwell) until a line "up"
arrives on stdin, and prints "up" once it takes mail;
--refuse-logins offers AUTH and refuses every login (535), as after a password change.
"""
import argparse
import logging
import os
import socket
import sys
import uuid
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Saver:
    def __init__(self, directory, down=False):
        self.directory = directory
        self.down = down

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.down:
            return "421 4.3.2 Service not available, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # Refuses mailboxes named reject…@ the way Postfix does, quoting the address
        # (reject-shouting…@ in capitals, as some servers echo it).
        if address.lower().startswith("reject"):
            quoted = address.upper() if address.lower().startswith("reject-shouting") else address
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % quoted
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


def refuse_every_login(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=False, handled=False)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--start-down", action="store_true")
    parser.add_argument("--refuse-logins", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    port = free_port()
    auth = {}
    if args.refuse_logins:
        # AUTH over plain TCP: the hub sends a password in clear only to this machine.
        auth = dict(authenticator=refuse_every_login, auth_required=True, auth_require_tls=False)
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        logging.getLogger("mail.log").setLevel(logging.ERROR)
    handler = Saver(args.dir, down=args.start_down)
    controller = Controller(handler, hostname="127.0.0.1", port=port, **auth)
    controller.start()
    print(port, flush=True)
    for line in sys.stdin:
        if line.strip() == "up":
            handler.down = False
            print("up", flush=True)
    controller.stop()


if __name__ == "__main__":
    main()
