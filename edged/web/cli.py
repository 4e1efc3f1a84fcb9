"""``edged web …``: tools for the console (the password hash for ``[web] password_hash``)."""

from __future__ import annotations

import argparse
import getpass
import sys

from edged.passwords import hash_password


def main(argv: list[str]) -> int:
    """Entry point of ``edged web``."""
    p = argparse.ArgumentParser(prog="edged web", description="Tools for the web console.")
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser(
        "hash-password",
        help="print a hash for [web] password_hash (reads the password from stdin or a prompt)",
    )
    h.add_argument("--stdin", action="store_true", help="read the password from stdin")
    args = p.parse_args(argv)
    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("console password: ")
        if getpass.getpass("again: ") != password:
            sys.stderr.write("edged web: the passwords differ\n")
            return 1
    if len(password) < 8:
        sys.stderr.write("edged web: use at least 8 characters\n")
        return 1
    sys.stdout.write(f'password_hash = "{hash_password(password)}"\n')
    return 0
