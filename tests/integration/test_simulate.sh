#!/usr/bin/env bash
# test_simulate.sh - checks `p1d simulate` on its own, without the decoder: CRCs recomputed
# independently, timestamps exactly --step apart, reproducible bytes, the DSMR 2.2 layout, the
# DLMS envelope, registers that integrate the printed power, fault injection counts, the pty
# (symlink, a reader receiving telegrams, clean-up on SIGTERM) and the TCP server.
# Needs P1D (the p1d binary), python3 and timeout; exits 77 when a program is missing.
set -u

if [ -z "${P1D:-}" ] || [ ! -x "$P1D" ]; then
	echo "P1D must point at the p1d binary" >&2
	exit 1
fi
for prog in python3 timeout head cmp; do
	if ! command -v "$prog" >/dev/null 2>&1; then
		echo "SKIP: $prog not found"
		exit 77
	fi
done

tmp=$(mktemp -d)
sim_pid=
cleanup() {
	if [ -n "$sim_pid" ]; then
		kill "$sim_pid" 2>/dev/null
		wait "$sim_pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
check() {
	local name=$1
	shift
	if "$@"; then
		echo "ok - $name"
	else
		echo "not ok - $name"
		failures=$((failures + 1))
	fi
}

sim() {
	"$P1D" simulate "$@"
}

cat >"$tmp/check.py" <<'EOF'
"""Independent checks of simulator output. Usage: check.py COMMAND FILE [ARGS...]"""
import re
import sys
from datetime import datetime, timedelta, timezone


def crc16_arc(data):
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def telegrams(data):
    """(text from '/' through '!', the CRC digits or None) for every telegram in data."""
    out = []
    for m in re.finditer(rb"/[^/]*?\r\n!([0-9A-F]{4})?\r\n", data, re.S):
        body = m.group(0)[: m.group(0).rindex(b"!") + 1]
        out.append((body, m.group(1)))
    return out


def fields(text):
    """OBIS code -> list of groups, for one telegram's text."""
    lines = text.decode("ascii").split("\r\n")
    res = {}
    for line in lines:
        m = re.match(r"^(\d+-\d+:\d+\.\d+\.\d+)((?:\([^)]*\))+)$", line)
        if m:
            res[m.group(1)] = re.findall(r"\(([^)]*)\)", m.group(2))
    return res


def number(group):
    value = group.split("*")[0]
    return int(value.replace(".", "")), len(value.split(".")[1]) if "." in value else 0


def milli(group):
    """A kWh/kW/m3 value as an integer number of thousandths."""
    v, decimals = number(group)
    return v * 10 ** (3 - decimals)


def tst_utc(tst):
    local = datetime.strptime(tst[:12], "%y%m%d%H%M%S")
    offset = {"S": 2, "W": 1}[tst[12]]
    return (local - timedelta(hours=offset)).replace(tzinfo=timezone.utc)


def fail(msg):
    print("  " + msg)
    sys.exit(1)


def cmd_crc(data, minimum):
    tel = telegrams(data)
    if len(tel) < int(minimum):
        fail(f"{len(tel)} telegrams, expected at least {minimum}")
    for i, (body, crc) in enumerate(tel):
        if crc is None or int(crc, 16) != crc16_arc(body):
            fail(f"telegram {i}: CRC {crc} but computed {crc16_arc(body):04X}")


def cmd_count(data, count):
    if len(telegrams(data)) != int(count):
        fail(f"{len(telegrams(data))} whole telegrams, expected {count}")


def cmd_times(data, count, step, first):
    tel = telegrams(data)
    if len(tel) != int(count):
        fail(f"{len(tel)} telegrams, expected {count}")
    times = [tst_utc(fields(t)["0-0:1.0.0"][0]) for t, _ in tel]
    if times[0].strftime("%Y-%m-%dT%H:%M:%SZ") != first:
        fail(f"first timestamp {times[0]}, expected {first}")
    for a, b in zip(times, times[1:]):
        if (b - a).total_seconds() != float(step):
            fail(f"timestamps {a} and {b} are not {step} s apart")


def cmd_dsmr22(data, count):
    if data.count(b"\r\n!\r\n") != int(count) or re.search(rb"![0-9A-F]{4}", data):
        fail("not every telegram ends with a bare '!'")
    if b"1-3:0.2.8" in data or b"0-0:1.0.0" in data:
        fail("DSMR 2.2 has no version or timestamp line")
    gas = re.findall(rb"0-1:24\.3\.0\((\d{12})\)\(00\)\(60\)\(1\)\(0-1:24\.2\.1\)\(m3\)\r\n"
                     rb"\((\d{5}\.\d{3})\)\r\n", data)
    if len(gas) != int(count):
        fail(f"{len(gas)} gas lines with the value on the next line, expected {count}")
    powers = re.findall(rb"1-0:[12]\.7\.0\(([^)]*)\)", data)
    if len(powers) != 2 * int(count) or not all(re.fullmatch(rb"\d{4}\.\d{2}\*kW", p) for p in powers):
        fail("power lines without the 10 W resolution of DSMR 2.2 (0000.45*kW)")


def cmd_envelope(data, count, key_hex):
    pos, counter = 0, 0
    frames = []
    while pos < len(data):
        head = data[pos:pos + 18]
        if len(head) < 18 or head[0] != 0xDB or head[1] != 8 or head[10] != 0x82 or head[13] != 0x30:
            fail(f"no envelope header at offset {pos}")
        length = int.from_bytes(head[11:13], "big")
        counter += 1
        if int.from_bytes(head[14:18], "big") != counter or not head[2:10].startswith(b"SIM"):
            fail(f"frame {counter}: frame counter or system title wrong")
        frames.append(data[pos:pos + 13 + length])
        pos += 13 + length
    if pos != len(data) or counter != int(count):
        fail(f"{counter} frames, {pos} of {len(data)} bytes; expected {count} frames exactly")
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        print("  (python3-cryptography missing: envelope not decrypted)")
        return
    ak = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    for f in frames:
        iv, body, tag = f[2:10] + f[14:18], f[18:-12], f[-12:]
        dec = Cipher(algorithms.AES(bytes.fromhex(key_hex)), modes.GCM(iv, tag, 12)).decryptor()
        dec.authenticate_additional_data(b"\x30" + ak)
        plain = dec.update(body) + dec.finalize()
        if not plain.startswith(b"/Lux5"):
            fail("decrypted frame is not a Smarty telegram")
        cmd_crc(plain, 1)


REGISTERS = {
    "tariffs": [("1-0:1.8.1", "1-0:1.7.0", 1), ("1-0:1.8.2", "1-0:1.7.0", 2),
                ("1-0:2.8.1", "1-0:2.7.0", 1), ("1-0:2.8.2", "1-0:2.7.0", 2)],
    "totals": [("1-0:1.8.0", "1-0:1.7.0", None), ("1-0:2.8.0", "1-0:2.7.0", None),
               ("1-0:3.8.0", "1-0:3.7.0", None), ("1-0:4.8.0", "1-0:4.7.0", None)],
}


def cmd_integral(data, count, step, kind):
    """Each register's difference between the first and the last telegram must equal the
    power printed in telegrams 1..n-1 times the step, summed over the telegrams whose tariff
    is that register's, within the register's resolution (1 Wh)."""
    tel = [fields(t) for t, _ in telegrams(data)]
    if len(tel) != int(count):
        fail(f"{len(tel)} telegrams, expected {count}")
    total = 0
    for reg, power, tariff in REGISTERS[kind]:
        expect_ws = 0  # W * s (var * s): printed W times the step
        for f in tel[1:]:
            if tariff is None or int(f["0-0:96.14.0"][0]) == tariff:
                expect_ws += milli(f[power][0]) * int(step)
        got_wh = milli(tel[-1][reg][0]) - milli(tel[0][reg][0])
        if abs(got_wh * 3600 - expect_ws) >= 3600:
            fail(f"{reg} grew {got_wh} Wh, the printed power gives {expect_ws / 3600:.3f} Wh")
        total += got_wh
    if total < 100:
        fail(f"registers grew only {total} Wh in all: too little to test anything")


def cmd_phases(data):
    """Per-phase powers add up to the totals; currents are the power over the voltage."""
    for text, _ in telegrams(data):
        f = fields(text)
        net = sum(milli(f[f"1-0:{c}.7.0"][0]) for c in (21, 41, 61)) - \
            sum(milli(f[f"1-0:{c}.7.0"][0]) for c in (22, 42, 62))
        if net != milli(f["1-0:1.7.0"][0]) - milli(f["1-0:2.7.0"][0]):
            fail("per-phase powers do not add up to the total")
        for v, i, p, q in ((32, 31, 21, 22), (52, 51, 41, 42), (72, 71, 61, 62)):
            watts = (milli(f[f"1-0:{p}.7.0"][0]) + milli(f[f"1-0:{q}.7.0"][0]))
            volts = milli(f[f"1-0:{v}.7.0"][0]) / 1000
            amps = milli(f[f"1-0:{i}.7.0"][0]) / 1000
            if not 200 < volts < 260 or abs(amps - watts / volts) > 0.51:
                fail(f"L{(v - 12) // 20}: {amps} A at {volts} V and {watts} W")


def cmd_faults(clean, damaged, bit_errors, bits):
    """The damaged run differs from the clean one in exactly the reported telegrams and bits."""
    if len(clean) != len(damaged):
        fail("bit errors changed the length")
    starts = [m.start() for m in re.finditer(rb"/ISK5", clean)] + [len(clean)]
    tel_bad, bit_bad = 0, 0
    for a, b in zip(starts, starts[1:]):
        diff = sum(bin(x ^ y).count("1") for x, y in zip(clean[a:b], damaged[a:b]))
        tel_bad += diff > 0
        bit_bad += diff
    if (tel_bad, bit_bad) != (int(bit_errors), int(bits)):
        fail(f"{tel_bad} telegrams / {bit_bad} bits differ, reported {bit_errors} / {bits}")
    if tel_bad == 0:
        fail("no bit errors injected at all")


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    data = open(path, "rb").read()
    if cmd == "faults":
        cmd_faults(data, open(sys.argv[3], "rb").read(), *sys.argv[4:])
    else:
        globals()["cmd_" + cmd](data, *sys.argv[3:])


main()
EOF

pycheck() {
	python3 "$tmp/check.py" "$@"
}

summary_value() { # summary_value FILE KEY
	sed -n "s/.*[ :]$2=\([0-9]*\).*/\1/p" "$1" | tail -n 1
}

# --- CRC of every DSMR 5 telegram, and of the other dialects that have one ---
sim --count 50 --interval 0 --step 7 --solar --start 2026-06-01T08:00:00Z >"$tmp/d5" 2>/dev/null
check "dsmr5 CRC recomputed for 50 telegrams" pycheck crc "$tmp/d5" 50
for d in dsmr4 fluvius smarty; do
	sim --dialect "$d" --count 20 --interval 0 --step 60 --solar --start 2026-07-01T10:00:00Z \
		>"$tmp/$d" 2>/dev/null
	check "$d CRC recomputed for 20 telegrams" pycheck crc "$tmp/$d" 20
done

# --- exactly --count telegrams, timestamps exactly --step apart, from --start ---
sim --count 3 --interval 0 --step 17 --start 2026-03-29T00:59:43Z >"$tmp/t3" 2>"$tmp/t3.err"
check "--count 3 gives 3 telegrams 17 s apart across the DST change" \
	pycheck times "$tmp/t3" 3 17 2026-03-29T00:59:43Z
check "summary line counts 3 generated and written" \
	grep -q "generated=3 written=3 dropped=0" "$tmp/t3.err"
sim --count 3 --interval 0 --start 1790000000 >"$tmp/t3u" 2>/dev/null
check "--start as unix time, default step 1 s" pycheck times "$tmp/t3u" 3 1 2026-09-21T14:13:20Z

# --- reproducible ---
repro=(--count 20 --interval 0 --step 300 --solar --start 2026-04-01T06:00:00Z --bit-errors 0.001)
sim "${repro[@]}" >"$tmp/s1" 2>/dev/null
sim "${repro[@]}" >"$tmp/s2" 2>/dev/null
sim "${repro[@]}" --seed 2 >"$tmp/s3" 2>/dev/null
check "the same seed gives byte-identical output, faults included" cmp -s "$tmp/s1" "$tmp/s2"
check "another seed gives other output" bash -c "! cmp -s '$tmp/s1' '$tmp/s3'"

# --- DSMR 2.2: no CRC, gas value on the next line ---
sim --dialect dsmr22 --count 5 --interval 0 --step 900 --start 2026-02-02T12:00:00Z >"$tmp/d22" 2>/dev/null
check "dsmr22 has no CRC and its gas value on the next line" pycheck dsmr22 "$tmp/d22" 5

# --- DLMS envelope ---
key=000102030405060708090A0B0C0D0E0F
sim --dialect smarty --key $key --count 4 --interval 0 --start 2026-02-02T12:00:00Z >"$tmp/enc" 2>/dev/null
check "smarty --key: envelopes starting with 0xDB, lengths from the header, counter 1..4" \
	pycheck envelope "$tmp/enc" 4 $key

# --- registers integrate the printed power (a tariff change at 23:00 local included) ---
sim --count 100 --interval 0 --step 60 --solar --start 2026-05-13T20:00:00Z >"$tmp/int5" 2>/dev/null
check "dsmr5 registers equal the power integral over 100 telegrams" \
	pycheck integral "$tmp/int5" 100 60 tariffs
sim --count 100 --interval 0 --step 60 --solar --start 2026-05-13T09:00:00Z >"$tmp/int5s" 2>/dev/null
check "dsmr5 export registers equal the power integral in daylight" \
	pycheck integral "$tmp/int5s" 100 60 tariffs
sim --dialect smarty --count 100 --interval 0 --step 60 --solar --start 2026-08-10T06:00:00Z \
	>"$tmp/intl" 2>/dev/null
check "smarty active and reactive totals equal the power integral" \
	pycheck integral "$tmp/intl" 100 60 totals
check "dsmr5 per-phase powers add up and currents follow I = P / V" pycheck phases "$tmp/int5s"

# --- fault injection ---
faults=(--count 40 --interval 0 --start 2026-02-02T12:00:00Z)
sim "${faults[@]}" >"$tmp/clean" 2>/dev/null
sim "${faults[@]}" --bit-errors 0.0005 >"$tmp/flipped" 2>"$tmp/flipped.err"
check "bit errors: exactly the reported telegrams and bits differ" pycheck faults "$tmp/clean" \
	"$tmp/flipped" "$(summary_value "$tmp/flipped.err" bit_errors)" \
	"$(summary_value "$tmp/flipped.err" bits_flipped)"
sim "${faults[@]}" --garbage 1 --count 10 >"$tmp/garbage" 2>"$tmp/garbage.err"
check "garbage before every telegram, all 10 telegrams intact" \
	bash -c "[ \"\$(head -c 1 '$tmp/garbage')\" != / ] && python3 '$tmp/check.py' crc '$tmp/garbage' 10 &&
		grep -q 'garbage=10 ' '$tmp/garbage.err'"
sim "${faults[@]}" --truncate 1 --count 10 >"$tmp/trunc" 2>"$tmp/trunc.err"
check "--truncate 1 cuts every telegram" \
	bash -c "grep -q 'truncated=10' '$tmp/trunc.err' && python3 '$tmp/check.py' count '$tmp/trunc' 0"

# --- usage errors ---
check "an unknown dialect is a usage error (status 2)" \
	bash -c "'$P1D' simulate --dialect dsmr9 --count 1 >/dev/null 2>&1; [ \$? -eq 2 ]"
check "--help prints the usage" bash -c "'$P1D' simulate --help | grep -q -- --bit-errors"

# --- pty: symlink, a reader gets telegram bytes, symlink removed on SIGTERM ---
if [ -c /dev/ptmx ] && [ -d /dev/pts ]; then
	link="$tmp/ttyP1"
	ln -s "$tmp/nonexistent" "$link" # a stale symlink to be replaced
	"$P1D" simulate --pty "$link" --interval 0.05 2>"$tmp/pty.err" &
	sim_pid=$!
	for _ in $(seq 50); do
		[ "$(readlink "$link")" != "$tmp/nonexistent" ] && [ -e "$link" ] && break
		sleep 0.1
	done
	check "--pty replaces the stale symlink with one to a pty" \
		bash -c "[ -c '$link' ] && readlink '$link' | grep -q '^/dev/pts/'"
	timeout 5 head -c 3000 "$link" >"$tmp/pty.out" 2>/dev/null
	check "a reader of the pty receives whole telegrams, raw CR LF" pycheck crc "$tmp/pty.out" 2
	kill -TERM "$sim_pid"
	wait "$sim_pid"
	status=$?
	sim_pid=
	check "SIGTERM: exit status 0" [ "$status" -eq 0 ]
	check "SIGTERM: the symlink is removed" bash -c "[ ! -e '$link' ] && [ ! -L '$link' ]"
	check "SIGTERM: summary line on stderr" \
		grep -q "generated=[1-9][0-9]* written=[1-9]" "$tmp/pty.err"
	: >"$tmp/regular"
	check "--pty never replaces a regular file" bash -c "'$P1D' simulate --pty '$tmp/regular' \
		--count 1 2>/dev/null; [ \$? -eq 2 ] && [ -f '$tmp/regular' ]"
else
	echo "skip - no pseudo-terminals here: pty checks not run"
fi

# --- TCP server ---
for _ in 1 2 3; do
	port=$((20000 + RANDOM % 20000))
	"$P1D" simulate --listen "127.0.0.1:$port" --interval 0.05 --count 100 >/dev/null 2>&1 &
	sim_pid=$!
	sleep 0.2
	kill -0 "$sim_pid" 2>/dev/null && break # else the port was taken: try another
	wait "$sim_pid"
	sim_pid=
done
cat >"$tmp/client.py" <<EOF
import socket, sys, time
for _ in range(50):
    try:
        s = socket.create_connection(("127.0.0.1", $port))
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("cannot connect")
s.settimeout(5)
data = b""
while data.count(b"!") < 4:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
open("$tmp/tcp.out", "wb").write(data)
EOF
python3 "$tmp/client.py"
check "--listen: a TCP client receives whole telegrams" pycheck crc "$tmp/tcp.out" 2
if [ -n "$sim_pid" ]; then
	kill -TERM "$sim_pid" 2>/dev/null
	wait "$sim_pid"
	sim_pid=
fi

if [ "$failures" -ne 0 ]; then
	echo "$failures check(s) failed"
	exit 1
fi
echo "all checks passed"
