#!/usr/bin/env python3
"""Fill in or check the CRCs of the hand-written fixture telegrams in this directory.

usage: mkcrc.py FILE...          rewrite each file: LF line ends become CR LF (except in files
                                 whose name contains "-lf"), and every "!????" is replaced by the
                                 CRC-16/ARC of the bytes from the frame's '/' through the '!'
       mkcrc.py --check FILE...  print, for every "!" that starts a line and is followed by hex
                                 digits, the CRC sent and the CRC computed; exit 1 on a mismatch

The frame's '/' is the last '/' before the '!' that starts a line (first byte of the file or
right after LF). The CRC is computed bitwise (reflected polynomial 0xA001, initial value 0), the
definition of dsmr-protocol.md section 3.6, independently of libp1.
"""
import re
import sys


def crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


assert crc16(b"123456789") == 0xBB3D


def frame_start(data: bytes, bang: int) -> int:
    i = bang
    while i > 0:
        i = data.rfind(b"/", 0, i)
        if i < 0:
            break
        if i == 0 or data[i - 1] == 0x0A:
            return i
    raise SystemExit("no '/' at a line start before offset %d" % bang)


def fill(path: str) -> None:
    data = open(path, "rb").read()
    if "-lf" not in path:
        data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    out = bytearray(data)
    for m in re.finditer(rb"!\?\?\?\?", data):
        start = frame_start(data, m.start())
        crc = b"%04X" % crc16(data[start:m.start() + 1])
        out[m.start() + 1:m.start() + 5] = crc
    open(path, "wb").write(bytes(out))


def check(path: str) -> bool:
    data = open(path, "rb").read()
    ok = True
    for m in re.finditer(rb"(?:^|\n)!([0-9A-Fa-f]{1,4})", data):
        bang = m.start(1) - 1
        start = frame_start(data, bang)
        sent = int(m.group(1), 16)
        got = crc16(data[start:bang + 1])
        print("%s: frame at %d: sent %04X computed %04X%s" %
              (path, start, sent, got, "" if sent == got else "  MISMATCH"))
        ok &= sent == got
    return ok


def main(argv):
    if argv[:1] == ["--check"]:
        return 0 if all([check(p) for p in argv[1:]]) else 1
    for p in argv:
        fill(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
