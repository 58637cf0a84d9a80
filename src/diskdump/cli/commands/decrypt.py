# SPDX-License-Identifier: GPL-2.0-or-later
"""``diskdump decrypt``: turn a saved ``vmcore.encrypted`` into a normal vmcore."""

from __future__ import annotations

import argparse
from typing import Any

from diskdump.cli._render import Progress, emit_json, human_size
from diskdump.cli.exitcodes import ExitCode
from diskdump.formats.codecs import CODEC_NAMES
from diskdump.formats.encrypted import read_private_key
from diskdump.savecore.convert import FORMATS
from diskdump.savecore.encrypted import decrypt_dump_file

__all__ = ["register", "run"]

DESCRIPTION = """\
Decrypt IN, a vmcore.encrypted that `diskdump savecore` kept because it had
no private key, into OUT, a normal vmcore: kdump-compressed (default; zero
pages excluded, --compress zlib by default, which crash and makedumpfile
read) or ELF (--format elf). Run it where the private key lives; the key is
an unencrypted PEM file, X25519 or RSA, whose public half the dump was
encrypted to (`diskdump dump --encrypt-to`, `[dump] encrypt_to`).

A wrong key is refused at once, before any chunk is read: the dump's key
envelope names the key id it was sealed for. Every chunk is authenticated
(ChaCha20-Poly1305; its clear header is authenticated data too): a changed
byte anywhere in a chunk is reported with the chunk and its offset, and a
crc mismatch (the bytes were damaged in storage) is told apart from a
failed tag (they were changed). OUT is written as a temporary file in its
directory (mode 0600), fsynced and renamed into place only when every page
was decrypted, so a failure leaves nothing behind.
"""

EPILOG = """\
exit status:
  0   OUT written
  1   wrong key, tampered or damaged input, not an encrypted dump, OUT exists (no --force)
  64  usage error

examples:
  diskdump decrypt --key /root/dump-key.pem /var/crash/host-20260101-120000/vmcore.encrypted vmcore
  diskdump decrypt --key key.pem vmcore.encrypted vmcore.elf --format elf
"""


def register(sub: Any) -> None:
    """Add the ``decrypt`` sub-parser."""
    parser = sub.add_parser(
        "decrypt",
        help="decrypt a saved vmcore.encrypted into a normal vmcore",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--key", required=True, metavar="PRIVATE.pem", help="the private key")
    parser.add_argument("input", metavar="IN", help="vmcore.encrypted written by savecore")
    parser.add_argument("output", metavar="OUT", help="the vmcore to write")
    parser.add_argument("--format", choices=FORMATS, default="kdump", help="default kdump")
    parser.add_argument(
        "--compress", choices=CODEC_NAMES, default="zlib", help="kdump page codec (default zlib)"
    )
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Decrypt; exit 0 when OUT was written."""
    key = read_private_key(args.key)
    progress = Progress("decrypt", enabled=not (args.json or args.quiet))
    result = decrypt_dump_file(
        args.input,
        args.output,
        key,
        format=args.format,
        compress=args.compress,
        overwrite=args.force,
        progress=progress,
    )
    if args.json:
        emit_json(
            {
                "input": args.input,
                "output": args.output,
                "format": result.format,
                "pages": result.pages,
                "size": result.output_size,
                "seconds": round(result.seconds, 3),
            }
        )
    else:
        print(
            f"decrypted {args.input} -> {args.output}: {result.format}, {result.pages} pages, "
            f"{human_size(result.output_size)} in {result.seconds:.1f} s"
        )
    return ExitCode.OK
