#!/usr/bin/env python3
"""The serial port's life beyond unplugging (test matrix S2 and S8), with the real p1d on socat
pty pairs.

S2, renumbering: the configured path is a link (like /dev/serial/by-id/... or a udev /dev/p1)
that moves from pty A to pty B while A lingers and keeps sending. p1d must follow the path
within 2 s and never read A again; when the link goes away it stops reading, and when it
comes back it reads what it names.

S8, wrong serial mode: a meter at the other speed (a DSMR 2.2 meter's 9600-7E1 read at
115200-8N1, a DSMR 5 meter's 115200-8N1 read at 9600-7E1), or a signal that is not inverted.
A pty has no speed, so the test sends what a UART at the configured setting would receive:
the sender's waveform sampled by a simulated receiver. After 60 s of such bytes p1d gives one
warning per meter that names the setting it used and the other one (in auto mode: both, and
the inversion); never before 60 s, never for a meter whose telegrams are fine among the
garbage, no log flood, no crash, and real telegrams are read at once when they come.
"""
import bisect
import os
import re
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import p1dtest as t  # noqa: E402
from test_faults import START, FaultTest  # noqa: E402

FOLLOW_S = 2.0   # S2: reading the node the path names within 2 s of the move
HINT_S = 60.0    # S8: the wrong-mode warning after 60 s of bytes without a valid telegram
TELEGRAM = re.compile(r"meter (\w+): telegram \d+: timestamp=(\S+)")


def waveform(data, bits, parity, invert=False):
    """Line levels, one per bit time, of data sent as 1 start bit, `bits` data bits (LSB
    first), an even parity bit when parity, 1 stop bit; back to back, idle high."""
    levels = [1] * 20
    for b in data:
        b &= (1 << bits) - 1
        frame = [0] + [(b >> i) & 1 for i in range(bits)]
        if parity:
            frame.append(bin(b).count("1") & 1)
        levels += frame + [1]
    levels += [1] * 20
    return [1 - v for v in levels] if invert else levels


def uart_receive(levels, tx_baud, rx_baud, rx_bits, rx_parity):
    """What a UART at rx_baud with rx_bits data bits (and a parity bit) reads from levels sent
    at tx_baud: each falling edge starts a character, sampled in the middle of each of its
    bits. Framing and parity errors are not checked (p1d clears INPCK: the tty delivers the
    character as read; a break reads as 0)."""
    tx_bit, rx_bit = 1.0 / tx_baud, 1.0 / rx_baud
    edges = [i for i in range(1, len(levels)) if levels[i - 1] == 1 and levels[i] == 0]
    n = len(levels)

    def level(at):
        i = int(at / tx_bit)
        return levels[i] if i < n else 1

    out, t_free = bytearray(), 0.0
    while True:
        k = bisect.bisect_left(edges, t_free / tx_bit)
        if k == len(edges):
            return bytes(out)
        t0 = edges[k] * tx_bit
        if level(t0 + 0.5 * rx_bit) != 0:  # a glitch, not a start bit
            t_free = t0 + tx_bit
            continue
        c = 0
        for i in range(rx_bits):
            c |= level(t0 + (1.5 + i) * rx_bit) << i
        out.append(c)
        t_free = t0 + (1.5 + rx_bits + (1 if rx_parity else 0)) * rx_bit


def with_parity(tel):
    """7E1 characters as 8 bits: the even parity bit as bit 7."""
    return bytes(b | (bin(b).count("1") & 1) << 7 for b in tel)


def at_9600_7e1(tel):
    """A 115200-8N1 telegram as a UART set to 9600-7E1 reads it."""
    return uart_receive(waveform(tel, 8, False), 115200, 9600, 7, True)


def at_115200_8n1(tel):
    """A 9600-7E1 telegram (a DSMR 2.2 or 3.0 meter) as a UART set to 115200-8N1 reads it."""
    return uart_receive(waveform(tel, 7, True), 9600, 115200, 8, False)


def inverted(tel):
    """A 115200-8N1 telegram whose signal nobody inverted, read at 115200-8N1."""
    return uart_receive(waveform(tel, 8, False, invert=True), 115200, 115200, 8, False)


class SerialTest(FaultTest):
    def pty(self, name):
        d = self.path(name)
        os.mkdir(d)
        p = t.Pty(self.procs, d)
        p.plug()
        return p

    def start_debug(self, conf_text):
        """p1d with -v -v: a debug line per telegram, with its meter time."""
        conf = self.path("p1d.conf")
        with open(conf, "w") as f:
            f.write(conf_text)
        p = t.start_p1d(self.procs, conf, ["-v", "-v"])
        self.expect_log(p, r"p1d .* started", 10, what="the start")
        return p

    def writer(self, pty, chunks, period, stop):
        """A thread writing chunks[i] every period seconds until stop is set; returns the list
        it appends (time, index) of each write to."""
        sent = []

        def run():
            start = t.now()
            for i, c in enumerate(chunks):
                if stop.wait(max(0.0, start + i * period - t.now())):
                    return
                try:
                    pty.write(c)
                except OSError:
                    return
                sent.append((t.now(), i))

        th = threading.Thread(target=run, daemon=True)
        th.start()
        self.addCleanup(th.join, 5)
        self.addCleanup(stop.set)
        return sent

    def telegram_times(self, p, stamps, since=0):
        """Arrival times of the debug lines of telegrams whose meter time is in stamps."""
        out = []
        for when, text in p.log.all()[since:]:
            m = TELEGRAM.search(text)
            if m and m.group(2) in stamps:
                out.append(when)
        return out


# ---- S2: the configured link moves to another node ---------------------------------------

def stamps_of(tels):
    """The meter times of telegrams as p1d's debug line prints them."""
    from datetime import datetime
    out = set()
    for tel in tels:
        m = re.search(rb"0-0:1\.0\.0\((\d{12})([SW])\)", tel)
        d = datetime.strptime(m.group(1).decode(), "%y%m%d%H%M%S")
        off = "+02:00" if m.group(2) == b"S" else "+01:00"
        out.add(d.strftime("%Y-%m-%dT%H:%M:%S") + off)
    return out


class Test01Renumbering(SerialTest):
    def test_link_moves_while_old_node_lingers(self):
        a, b = self.pty("a"), self.pty("b")
        link = self.path("p1")
        os.symlink(a.node, link)
        tel_a = self.telegrams(400, START, "a")
        tel_b = self.telegrams(400, START + 200 * 86400, "b")
        sa, sb = stamps_of(tel_a), stamps_of(tel_b)
        self.assertFalse(sa & sb)
        p = self.start_debug(f"[meter main]\nserial = {link}\npreset = 115200-8N1\n"
                             "[store]\nenabled = false\n[http]\nlisten =\n")
        self.expect_log(p, r"meter main: reading .*/p1\b", 3, what="serial open")
        stop_a, stop_b = threading.Event(), threading.Event()
        self.writer(a, tel_a, 0.1, stop_a)  # A keeps sending to the end: it lingers
        if not t.wait_until(lambda: len(self.telegram_times(p, sa)) >= 5, 5):
            self.fail("p1d did not read A's telegrams:\n" + p.log.text())
        self.writer(b, tel_b, 0.1, stop_b)

        # the link moves to B
        mark = p.log.mark()
        tmp = self.path("p1.new")
        os.symlink(b.node, tmp)
        t_move = t.now()
        os.replace(tmp, link)
        self.expect_log(p, r"meter main: .*/p1 now names another device", FOLLOW_S, mark,
                        what="the move noticed")
        if not t.wait_until(lambda: self.telegram_times(p, sb, mark), FOLLOW_S + 1):
            self.fail("no telegram from B after the move:\n" + p.log.text(mark))
        time.sleep(2)
        first_b = min(self.telegram_times(p, sb, mark)) - t_move
        late_a = [x - t_move for x in self.telegram_times(p, sa, mark) if x - t_move > 1.0]
        self.assertLessEqual(first_b, FOLLOW_S, "first telegram from B after the move")
        self.assertEqual(late_a, [], "telegrams from A read after the link moved to B")

        # the link goes away: nothing is read; it comes back (to B): reading resumes
        mark = p.log.mark()
        t_gone = t.now()
        os.unlink(link)
        self.expect_log(p, r"meter main: .*/p1 no longer names a device", FOLLOW_S, mark,
                        what="the link removed")
        self.expect_log(p, r"meter main: .*/p1 disappeared", 1, mark, what="the port closed")
        time.sleep(2)
        read_gone = [x - t_gone for x in self.telegram_times(p, sa | sb, mark)
                     if x - t_gone > 1.0]
        self.assertEqual(read_gone, [], "telegrams read while the link was gone")
        self.expect_running(p, "while the link was gone")
        mark = p.log.mark()
        t_back = t.now()
        os.symlink(b.node, link)
        self.expect_log(p, r"meter main: .*/p1 back after", FOLLOW_S, mark, what="link back")
        if not t.wait_until(lambda: self.telegram_times(p, sb, mark), FOLLOW_S):
            self.fail("no telegram from B after the link came back:\n" + p.log.text(mark))
        back = min(self.telegram_times(p, sb, mark)) - t_back
        self.assertEqual(self.telegram_times(p, sa, mark), [], "A read after the link came back")
        stop_a.set()
        stop_b.set()
        self.finish(p)
        t.figure(f"S2: B read {first_b:.2f} s after the link moved (A still sending), "
                 f"{back:.2f} s after it came back; 0 telegrams from A after the move")


# ---- S8: wrong serial mode ----------------------------------------------------------------

HINT = r"meter {}: \d+ bytes from \S+ in \d+ s but no valid telegram at "


class Test02WrongMode(SerialTest):
    def test_wrong_mode_diagnostic(self):
        tels = self.telegrams(90)
        # (meter, preset, bytes fed each second, what the warning must say)
        cases = [
            ("slow", "115200-8N1", [at_115200_8n1(x) for x in tels],
             [r"at 115200-8N1: DSMR 2\.2 and 3\.0 meters send 9600-7E1, try preset = 9600-7E1"]),
            ("fast", "9600-7E1", [at_9600_7e1(x) for x in tels],
             [r"at 9600-7E1: DSMR 4 and 5, e-MUCS and Smarty meters send 115200-8N1, "
              r"try preset = 115200-8N1"]),
            ("flip", "auto", [inverted(x) for x in tels],
             [r"at 115200-8N1 or 9600-7E1: check that the P1 signal is inverted"]),
            # good telegrams among the same garbage: never warned
            ("good", "115200-8N1", [at_115200_8n1(x) + x for x in tels], None),
        ]
        for name, _, chunks, _ in cases:
            self.assertGreater(min(len(c) for c in chunks), 64, f"{name}: bytes per telegram")
        ptys = {name: self.pty(name) for name, _, _, _ in cases}
        conf = "".join(f"[meter {name}]\nserial = {ptys[name].node}\npreset = {preset}\n"
                       for name, preset, _, _ in cases)
        p = self.start_debug(conf + "[store]\nenabled = false\n[http]\nlisten =\n")
        for name, _, _, _ in cases:
            self.expect_log(p, rf"meter {name}: reading ", 3, what=f"{name} open")
        stop = threading.Event()
        sent = {name: self.writer(ptys[name], chunks, 1.0, stop)
                for name, _, chunks, _ in cases}
        t.wait_until(lambda: all(sent.values()), 3)
        first = {name: s[0][0] for name, s in sent.items()}
        warned = {}
        for name, _, _, says in cases:
            if says:
                r = self.expect_log(p, HINT.format(name), HINT_S + 15, what=f"{name}: warning")
                warned[name] = r[0] - first[name]
        time.sleep(3)
        stop.set()
        lines = p.log.all()
        for name, preset, _, says in cases:
            got = [text for _, text in lines if re.search(HINT.format(name), text)]
            if not says:
                self.assertEqual(got, [], f"{name}: warned although its telegrams are valid")
                continue
            self.assertEqual(len(got), 1, f"{name}: the warning once, got {got}")
            for pattern in says:
                self.assertRegex(got[0], pattern, f"{name}: what the warning says")
            self.assertGreaterEqual(warned[name], HINT_S - 0.5, f"{name}: warned too early")
            ours = [text for _, text in lines if re.search(rf"(warning|error): meter {name}:", text)]
            self.assertLessEqual(len(ours), 8, f"{name}: log flood:\n" + "\n".join(ours))
        good = len([1 for _, text in lines if re.search(r"meter good: telegram \d+:", text)])
        self.assertGreaterEqual(good, 60, "meter good: its telegrams among the garbage")
        self.expect_running(p, "after the garbage")

        # the right bytes now: read at once, and the warning may come again after a new stretch
        # (a pty keeps 8 bits without parity: at 9600-7E1 p1d reads the parity bit as the 8th
        # bit and ignores it)
        mark = p.log.mark()
        ptys["slow"].write(b"".join(tels[:2]))
        ptys["fast"].write(b"".join(with_parity(x) for x in tels[:2]))
        self.expect_log(p, r"meter slow: telegram \d+:", 3, mark, what="slow: a real telegram")
        self.expect_log(p, r"meter fast: telegram \d+:", 3, mark, what="fast: a 7E1 telegram")
        self.finish(p)
        t.figure("S8: one warning per meter after " +
                 ", ".join(f"{n} {w:.1f} s" for n, w in sorted(warned.items())) +
                 "; none for the meter with valid telegrams")


def main():
    if not t.P1D or not os.access(t.P1D, os.X_OK):
        print("P1D must point at the p1d binary", file=sys.stderr)
        return 1
    if not t.SOCAT:
        print("SKIP: socat not found")
        return 77
    prog = unittest.main(exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
