#!/usr/bin/env bash
# Build the Debian package from a copy of this tree and check it the way a user meets it.
#
#   bdeps    every pkg-config module CMake needs comes from a package in Build-Depends
#   build    dpkg-buildpackage -b -us -uc in a temporary directory (a copy of the tree, so nothing
#            lands beside the source), its unit tests included
#   lint     lintian: no error and no warning (a tag accepted later goes, with its reason, into
#            debian/p1d.lintian-overrides and docs/install.md)
#   contents the .deb's file list (nothing outside p1d's own places), the conffile, Depends, the
#            version of the package, of CMake and of `p1d --version`
#   unit     the packaged unit: systemd-analyze verify (silent) and security --offline=true
#            (exposure at most 2.0)
#   root     (root only) debootstrap a minimal Debian with systemd into a temporary directory and,
#            chrooted: apt install the .deb, run the installed p1d over simulated telegrams with
#            its HTTP API and dashboard, edit the config, upgrade to a second build with a bumped
#            version and a changed conffile (edited config and data kept), remove (data and
#            config kept), purge (all gone)
#
# Usage: scripts/package-test.sh [--no-root] [--keep]
#        scripts/package-test.sh --cross ARCH [--keep]
#   --no-root     skip the root phase (it needs root, debootstrap and the Debian mirror)
#   --cross ARCH  instead of the above: in a bootstrapped root, cross-build for ARCH (arm64,
#                 armhf) with dpkg-buildpackage -a, lint the package, install it there and run
#                 the installed p1d under qemu-user (root only)
#   --keep        keep the temporary directory and print its name
# Environment: P1_PKG_SUITE (default: this system's codename), P1_PKG_MIRROR (default: the
# mirror apt uses here for that suite). Exit: 0 passed, 1 failed, 77 skipped (tools missing).
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc 2>/dev/null || echo 2)
root_phase=1 keep=0 cross=
usage() { sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--no-root) root_phase=0 ;;
	--keep) keep=1 ;;
	--cross) [ $# -ge 2 ] || usage; cross=$2; shift ;;
	*) usage ;;
	esac
	shift
done

for t in dpkg-buildpackage dh lintian systemd-analyze; do
	command -v "$t" >/dev/null || { echo "SKIP: $t not installed (scripts/deps.sh installs it)"; exit 77; }
done
if [ -n "$cross" ]; then
	[ "$(id -u)" = 0 ] || { echo "SKIP: --cross needs root"; exit 77; }
	command -v debootstrap >/dev/null || { echo "SKIP: debootstrap not installed"; exit 77; }
elif [ $root_phase = 1 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "skip: root phase (not root)"; root_phase=0
	else
		for t in debootstrap python3 curl; do
			command -v $t >/dev/null || { echo "skip: root phase ($t not installed)"; root_phase=0; }
		done
	fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/p1d-package.XXXXXX")
cleanup() {
	if [ $keep = 1 ]; then echo "kept: $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
failures=0 passes=0
ok() { echo "ok - $*"; passes=$((passes + 1)); }
fail() { echo "not ok - $*"; failures=$((failures + 1)); }
check() { # description, command...
	local what=$1; shift
	if "$@"; then ok "$what"; else fail "$what"; fi
}
t0=$SECONDS
phase() { echo "== $1 (at $((SECONDS - t0)) s)"; }
finish() {
	echo "package test: $((SECONDS - t0)) s"
	echo "$passes passed, $failures failed"
	[ $failures = 0 ]
	exit
}

version=$(sed -n 's/^project(p1d VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
deb_version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
arch=$(dpkg --print-architecture)

# copy_tree DEST: the files git knows of (tracked, or new and not ignored) as they are now,
# or every file when this is not a git checkout
copy_tree() {
	mkdir -p "$1"
	if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
		(cd "$src" && git ls-files -z -co --exclude-standard |
			while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done |
			tar --null -T - -cf -) | tar -C "$1" -xf -
	else
		(cd "$src" && tar --exclude='./build*' --exclude=./.git -cf - .) | tar -C "$1" -xf -
	fi
}

# build DIR LOG [DEB_BUILD_OPTIONS...]: dpkg-buildpackage in DIR, output beside it
build() {
	local dir=$1 log=$2; shift 2
	(cd "$dir" && DEB_BUILD_OPTIONS="parallel=$jobs $*" dpkg-buildpackage -b -us -uc) >"$log" 2>&1 ||
		{ tail -40 "$log"; return 1; }
}

# lint DIR CHANGES: lintian, failing on errors and warnings
lint() {
	local out status
	out=$(cd "$1" && lintian --display-info --fail-on error,warning "$2" 2>&1)
	status=$?
	printf '%s\n' "$out" | grep -v '^N:\|running with root privileges' | sed 's/^/  /'
	check "lintian $2: no error, no warning" [ $status = 0 ]
}

# bootstrap [debootstrap options...]: a minimal Debian in $root, where no service starts
root=$tmp/root
bootstrap() {
	local suite mirror start=$SECONDS
	suite=${P1_PKG_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
	mirror=${P1_PKG_MIRROR:-$(apt-cache policy 2>/dev/null | awk -v s="$suite/main" '$3 == s { print $2; exit }')}
	phase "debootstrap $suite${mirror:+ from $mirror}"
	if ! debootstrap --variant=minbase "$@" "$suite" "$root" $mirror >"$tmp/debootstrap.log" 2>&1; then
		tail -20 "$tmp/debootstrap.log"
		fail "debootstrap --variant=minbase ${*:+$* }$suite"
		finish
	fi
	ok "debootstrap --variant=minbase ${*:+$* }$suite ($((SECONDS - start)) s)"
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod +x "$root/usr/sbin/policy-rc.d"
}
# in_root CMD...: CMD chrooted into $root, with /proc mounted in a mount namespace of its own
# when possible; ( exec "${in_root_cmd[@]}" "$root" CMD... ) & gives CMD's pid
if unshare --mount --propagation private true 2>/dev/null; then
	in_root_cmd=(unshare --mount --propagation private sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"')
else
	in_root_cmd=(sh -c 'exec chroot "$0" "$@"')
fi
in_root() { "${in_root_cmd[@]}" "$root" "$@"; }
apt_root() { in_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends \
	-o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef "$@" >>"$tmp/apt.log" 2>&1 ||
	{ tail -20 "$tmp/apt.log"; return 1; }; }
status_of() { in_root dpkg-query -W -f='${db:Status-Abbrev}' p1d 2>/dev/null | tr -d ' '; }
exists() { [ -e "$root$1" ] || [ -L "$root$1" ]; }
absent() { ! exists "$1"; }

# cross_test ARCH: the --cross mode
cross_test() {
	local a=$1 cpu dir=/build/p1d-$version start
	cpu=$(dpkg-architecture -a "$a" -qDEB_HOST_GNU_CPU 2>/dev/null) || { fail "unknown architecture $a"; finish; }
	bootstrap
	copy_tree "$root$dir"
	phase "cross toolchain and $a libraries"
	start=$SECONDS
	check "dpkg --add-architecture $a" in_root dpkg --add-architecture "$a"
	check "apt-get update" apt_root update
	check "crossbuild-essential-$a, debhelper, qemu-user-static" \
		apt_root install "crossbuild-essential-$a" debhelper qemu-user-static
	check "apt-get build-dep -a $a -P nocheck ./" \
		in_root sh -c "cd $dir && DEBIAN_FRONTEND=noninteractive apt-get -q -y build-dep -a $a -P nocheck ./ >/dev/null 2>&1"
	echo "  ($((SECONDS - start)) s for the toolchain and libraries)"
	phase "dpkg-buildpackage -a $a"
	start=$SECONDS
	if ! in_root sh -c "cd $dir && DEB_BUILD_OPTIONS='parallel=$jobs nocheck' dpkg-buildpackage -a $a --build-profiles=nocheck -b -us -uc" \
		>"$tmp/build-$a.log" 2>&1; then
		tail -40 "$tmp/build-$a.log"
		fail "dpkg-buildpackage -a $a"
		finish
	fi
	ok "dpkg-buildpackage -a $a --build-profiles=nocheck -b -us -uc ($((SECONDS - start)) s)"
	local deb=$root/build/p1d_${version}_$a.deb
	check "p1d_${version}_$a.deb built for $a" [ "$(dpkg-deb -f "$deb" Architecture 2>/dev/null)" = "$a" ]
	lint "$root/build" "p1d_${version}_$a.changes"
	phase "install and run under qemu-$cpu-static"
	check "apt-get install ./p1d_${version}_$a.deb" apt_root install "/build/p1d_${version}_$a.deb"
	check "p1d --version says $version" [ "$(in_root "qemu-$cpu-static" /usr/sbin/p1d --version)" = "p1d $version" ]
	check "p1d simulate | p1d decode: every telegram valid" in_root sh -c \
		"qemu-$cpu-static /usr/sbin/p1d simulate --interval 0 --count 20 2>/dev/null | qemu-$cpu-static /usr/sbin/p1d decode >/dev/null"
	check "p1d -n accepts the shipped config" in_root "qemu-$cpu-static" /usr/sbin/p1d -n -c /etc/p1d/p1d.conf
	finish
}

[ -z "$cross" ] || cross_test "$cross"

# ---------------------------------------------------------------------------------------------
# Every library CMake asks pkg-config for comes from a package named in Build-Depends (a build
# here would not notice a missing one: the package is installed anyway).
phase "Build-Depends"
bdeps=$(awk '/^Build-Depends:/ { f = 1; sub(/^Build-Depends:/, ""); print; next }
	f && /^[ \t]/ { print; next } { f = 0 }' "$src/debian/control" |
	tr ',' '\n' | sed 's/[[(<].*//; s/^[ \t]*//; s/[ \t]*$//' | grep -v '^$')
for m in $(grep -ho 'pkg_check_modules([^)]*)' "$src/CMakeLists.txt" "$src/tests/CMakeLists.txt" |
	sed 's/^pkg_check_modules([^ ]*//; s/)$//' | tr ' ' '\n' | grep -v '^[A-Z_]*$' | sed 's/[<>=].*//'); do
	pc=$(pkg-config --path "$m" 2>/dev/null | head -1)
	pkg=${pc:+$(dpkg -S "$pc" 2>/dev/null | head -1 | sed 's/[:,].*//')}
	check "pkg-config module $m (${pkg:-no package found}) is in Build-Depends" grep -qxF "${pkg:-?}" <<<"$bdeps"
done

# ---------------------------------------------------------------------------------------------
phase "build $deb_version"
check "debian/changelog ($deb_version) and CMakeLists.txt ($version) agree" [ "$deb_version" = "$version" ]
copy_tree "$tmp/v1/p1d-$version"
start=$SECONDS
if ! build "$tmp/v1/p1d-$version" "$tmp/build-v1.log"; then
	fail "dpkg-buildpackage -b -us -uc"
	finish
fi
ok "dpkg-buildpackage -b -us -uc ($((SECONDS - start)) s, unit tests included)"
deb=$tmp/v1/p1d_${version}_$arch.deb
check "p1d_${version}_$arch.deb built" test -f "$deb"

# ---------------------------------------------------------------------------------------------
phase "lintian"
lint "$tmp/v1" "p1d_${version}_$arch.changes"

# ---------------------------------------------------------------------------------------------
phase "contents"
files=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' | grep -v '/$')
unit=$(printf '%s\n' "$files" | grep -E '^(/usr)?/lib/systemd/system/p1d\.service$')
for f in /usr/sbin/p1d /etc/p1d/p1d.conf /usr/share/man/man8/p1d.8.gz /usr/share/man/man5/p1d.conf.5.gz \
	/usr/share/doc/p1d/copyright /usr/share/doc/p1d/changelog.gz /usr/share/doc/p1d/examples/99-p1.rules; do
	check "ships $f" grep -qxF "$f" <<<"$files"
done
check "ships README and docs" grep -q '^/usr/share/doc/p1d/README.md' <<<"$files"
for f in "$src"/systemd/*.socket; do
	[ -e "$f" ] || continue
	check "ships $(basename "$f") as an example only" grep -qxF "/usr/share/doc/p1d/examples/$(basename "$f")" <<<"$files"
done
check "ships the unit ($unit)" test -n "$unit"
stray=$(grep -vE '^(/etc/p1d/|(/usr)?/lib/systemd/system/p1d\.service$|/usr/sbin/p1d$|/usr/share/man/man[58]/p1d|/usr/share/doc/p1d/|/usr/share/p1d/|/usr/share/lintian/overrides/p1d$)' <<<"$files")
check "no file outside p1d's places${stray:+: $(echo $stray)}" test -z "$stray"
for f in $(cd "$src/web" 2>/dev/null && find . -type f | sed 's|^\./||' | sort); do
	check "ships the dashboard's $f" grep -qxF "/usr/share/p1d/www/$f" <<<"$files"
done
mkdir -p "$tmp/ctl" "$tmp/tree"
dpkg-deb -e "$deb" "$tmp/ctl"
dpkg-deb -x "$deb" "$tmp/tree"
check "the only conffile is /etc/p1d/p1d.conf" [ "$(cat "$tmp/ctl/conffiles")" = /etc/p1d/p1d.conf ]
check "the conffile is etc/p1d.conf" cmp -s "$tmp/tree/etc/p1d/p1d.conf" "$src/etc/p1d.conf"
check "the unit is systemd/p1d.service" cmp -s "$tmp/tree$unit" "$src/systemd/p1d.service"
depends=$(dpkg-deb -f "$deb" Depends)
for d in libjs-chart.js procps libc6 libsqlite3-0 libmosquitto1 libmicrohttpd12; do
	check "Depends: $d" grep -qE "(^|, )$d( |,|$)" <<<"$depends"
done
check "postrm purges /var/lib/p1d and /var/lib/private/p1d" grep -q 'rm -rf /var/lib/p1d /var/lib/private/p1d' "$tmp/ctl/postrm"
check "postinst enables p1d.service" grep -q "deb-systemd-helper enable 'p1d.service'" "$tmp/ctl/postinst"
check "package version is $version" [ "$(dpkg-deb -f "$deb" Version)" = "$version" ]
got=$("$tmp/tree/usr/sbin/p1d" --version 2>&1)
check "packaged p1d --version says $version ($got)" [ "$got" = "p1d $version" ]

# ---------------------------------------------------------------------------------------------
phase "unit"
# verify checks the commands exist and the man pages resolve: point both at the unpacked tree
mkdir -p "$tmp/verify"
sed "s|/usr/sbin/p1d|$tmp/tree/usr/sbin/p1d|g" "$tmp/tree$unit" >"$tmp/verify/p1d.service"
out=$(MANPATH=$tmp/tree/usr/share/man systemd-analyze verify "$tmp/verify/p1d.service" 2>&1)
status=$?
[ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/  /'
check "systemd-analyze verify: silent and successful" [ "$status$out" = 0 ]
out=$(systemd-analyze security --offline=true "$tmp/tree$unit" 2>&1)
score=$(sed -n 's/.*Overall exposure level for p1d.service: \([0-9.]*\).*/\1/p' <<<"$out")
check "systemd-analyze security --offline=true: exposure ${score:-?} (at most 2.0)" \
	awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }'

[ $root_phase = 1 ] || finish

# ---------------------------------------------------------------------------------------------
# A second version: the last number of the version bumped, a changed conffile, no build-time
# tests (they ran above).
version2=$(awk -F. -v OFS=. '{ $NF = $NF + 1; print }' <<<"$version")
phase "build $version2 (for the upgrade)"
copy_tree "$tmp/v2/p1d-$version2"
(
	cd "$tmp/v2/p1d-$version2" &&
		sed -i "s/^\(project(p1d VERSION \)$version/\1$version2/" CMakeLists.txt &&
		printf '# (changed in %s)\n' "$version2" >>etc/p1d.conf &&
		{ printf 'p1d (%s) unstable; urgency=medium\n\n  * Upgrade test.\n\n -- %s  %s\n\n' \
			"$version2" "$(dpkg-parsechangelog -S Maintainer)" "$(date -R)"; cat debian/changelog; } >debian/changelog.new &&
		mv debian/changelog.new debian/changelog
)
if ! build "$tmp/v2/p1d-$version2" "$tmp/build-v2.log" nocheck; then
	fail "dpkg-buildpackage of $version2"
	finish
fi
ok "dpkg-buildpackage of $version2"
deb2=$tmp/v2/p1d_${version2}_$arch.deb

bootstrap --include=systemd
mkdir -p "$root/tmp/debs"
cp "$deb" "$deb2" "$root/tmp/debs/"
wants=/etc/systemd/system/multi-user.target.wants/p1d.service

phase "install $version"
check "apt-get update" apt_root update
start=$SECONDS
if ! apt_root install "/tmp/debs/p1d_${version}_$arch.deb"; then
	fail "apt-get install ./p1d_${version}_$arch.deb"
	finish
fi
ok "apt-get install ./p1d_${version}_$arch.deb, with its dependencies ($((SECONDS - start)) s)"
check "installed" [ "$(status_of)" = ii ]
check "p1d --version says $version" [ "$(in_root p1d --version)" = "p1d $version" ]
check "the unit is enabled ($wants)" test -L "$root$wants"
check "man p1d finds its page" exists /usr/share/man/man8/p1d.8.gz
for js in $(grep -aoE '/usr/share/javascript/[A-Za-z0-9._/+-]+' "$root/usr/sbin/p1d" | sort -u); do
	check "the Chart.js p1d serves, $js, is installed" exists "$js"
done
out=$(in_root systemd-analyze verify --man=no p1d.service 2>&1)
status=$?
[ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/  /'
check "systemd-analyze verify p1d.service in the installed system: silent and successful" [ "$status$out" = 0 ]
score=$(in_root systemd-analyze security --offline=true p1d.service 2>&1 |
	sed -n 's/.*Overall exposure level for p1d.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security --offline=true in the installed system: ${score:-?}" \
	awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }'
check "p1d -n accepts the shipped config" in_root p1d -n -c /etc/p1d/p1d.conf

# The state directory as systemd makes it for DynamicUser=yes, then the installed p1d reading
# simulated telegrams at meter pace, with HTTP on a free loopback port (the chroot shares this
# network), writing its history there.
mkdir -p "$root/var/lib/private" && chmod 0700 "$root/var/lib/private" && mkdir -m 0750 "$root/var/lib/private/p1d"
ln -s private/p1d "$root/var/lib/p1d"
in_root p1d simulate --interval 0 --count 120 >"$root/tmp/telegrams.txt" 2>/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
( exec "${in_root_cmd[@]}" "$root" p1d --file /tmp/telegrams.txt --http "127.0.0.1:$port" ) >"$tmp/p1d.log" 2>&1 &
pid=$!
url=http://127.0.0.1:$port
status_json=
for _ in $(seq 50); do
	status_json=$(curl -fsS "$url/api/v1/status" 2>/dev/null) && break
	sleep 0.2
done
got=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])' <<<"$status_json" 2>/dev/null)
check "/api/v1/status says $version ($got)" [ "$got" = "$version" ]
if exists /usr/share/p1d/www/index.html; then
	check "the dashboard page is served" curl -fsS -o /dev/null "$url/"
	for ref in $(grep -oE '(src|href)="/[^"]*"' "$root/usr/share/p1d/www/index.html" | sed 's/.*="//; s/"$//' | sort -u); do
		check "the dashboard's $ref is served" curl -fsS -o /dev/null "$url$ref"
	done
fi
kill -TERM $pid 2>/dev/null
wait $pid 2>/dev/null
check "p1d stored history under /var/lib/p1d (in /var/lib/private/p1d)" test -s "$root/var/lib/private/p1d/p1d.db"
sum=$(md5sum <"$root/var/lib/private/p1d/p1d.db")

phase "upgrade to $version2 with an edited config"
sed -i 's|^serial = .*|serial = /dev/p1|' "$root/etc/p1d/p1d.conf"
echo "extra" >"$root/var/lib/private/p1d/kept"
check "apt-get install ./p1d_${version2}_$arch.deb (the config changed in both: keep ours)" \
	apt_root install "/tmp/debs/p1d_${version2}_$arch.deb"
check "p1d --version says $version2" [ "$(in_root p1d --version)" = "p1d $version2" ]
check "the edited config is kept" grep -qx 'serial = /dev/p1' "$root/etc/p1d/p1d.conf"
check "the new default config is beside it as p1d.conf.dpkg-dist" grep -q "changed in $version2" "$root/etc/p1d/p1d.conf.dpkg-dist"
check "the history is kept" [ "$(md5sum <"$root/var/lib/private/p1d/p1d.db")" = "$sum" ]
check "/var/lib/p1d still points at it" [ "$(readlink "$root/var/lib/p1d")" = private/p1d ]
check "the unit is still enabled" test -L "$root$wants"

phase "remove"
check "apt-get remove p1d" apt_root remove p1d
check "status: removed, config files left (rc)" [ "$(status_of)" = rc ]
check "the binary is gone" absent /usr/sbin/p1d
check "the unit is gone" absent "${unit}"
check "the edited config is kept" grep -qx 'serial = /dev/p1' "$root/etc/p1d/p1d.conf"
check "the history is kept" [ "$(md5sum <"$root/var/lib/private/p1d/p1d.db")" = "$sum" ]

phase "reinstall, then purge"
check "apt-get install ./p1d_${version2}_$arch.deb again" apt_root install "/tmp/debs/p1d_${version2}_$arch.deb"
check "the edited config survived remove and reinstall" grep -qx 'serial = /dev/p1' "$root/etc/p1d/p1d.conf"
check "apt-get purge p1d" apt_root purge p1d
check "status: not installed" [ -z "$(status_of)" ]
for f in /etc/p1d /var/lib/p1d /var/lib/private/p1d "$wants"; do
	check "$f is gone" absent "$f"
done
check "/var/lib/private itself (systemd's) is left" test -d "$root/var/lib/private"
finish
