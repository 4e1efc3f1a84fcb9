#!/usr/bin/env bash
# Build edged_<version>_<arch>.deb from this checkout (run by `make deb`).
#
# The package carries its own virtualenv in /opt/edged, built with Debian's /usr/bin/python3
# by the same `make install DESTDIR=…` staging that `make install` uses (scripts and bytecode
# rewritten to the final paths), then packed with `dpkg-deb --build`: no debhelper, no
# dpkg-buildpackage, no root needed. Environment (all optional):
#   VERSION       package and edged version (default: pyproject.toml); for test builds
#   RELEASE_KIND  feature | update | platform (default: edged/licensing/release.py)
#   RELEASE_DATE  YYYY-MM-DD (default: edged/licensing/release.py)
#   WHEELHOUSE    where the pinned wheels are kept between builds (default: build/wheels)
#   OUT           output directory (default: dist)
#   DEB_COMPRESS  dpkg-deb compressor: xz (default), gzip, zstd, none
#   DEB_ARCH      target architecture (default: this machine's); another one (arm64) gets
#                 the wheels for that platform; such a package is built, not run here
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=/usr/bin/python3
prefix=/opt/edged
OUT=${OUT:-$repo/dist}
WHEELHOUSE=${WHEELHOUSE:-$repo/build/wheels}
DEB_COMPRESS=${DEB_COMPRESS:-xz}

host_arch=$(dpkg --print-architecture)
arch=${DEB_ARCH:-$host_arch}
case "$arch" in
    amd64) platform=x86_64 ;;
    arm64) platform=aarch64 ;;
    *) echo "make deb: DEB_ARCH $arch is not supported (amd64, arm64)" >&2; exit 1 ;;
esac

"$python" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null || {
    echo "make deb: needs Debian's python3 (>= 3.11) with venv: apt-get install python3-venv" >&2
    exit 1
}
command -v dpkg-deb >/dev/null || { echo "make deb: needs dpkg-deb (dpkg)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/src
stage=$work/root
mkdir -p "$src" "$stage" "$OUT" "$WHEELHOUSE"

# A clean copy of the sources: the build never writes into the checkout, and a test build
# may carry another version or release kind.
(cd "$repo" && cp -R pyproject.toml README.md Makefile mk edged drivers systemd config docs \
    tools "$src"/)
find "$src" -name __pycache__ -prune -exec rm -rf {} +
"$python" - "$src" "${VERSION:-}" "${RELEASE_KIND:-}" "${RELEASE_DATE:-}" <<'PY'
import re, sys
from pathlib import Path
src, version, kind, day = Path(sys.argv[1]), *sys.argv[2:]
def sub(path, pattern, repl):
    p = src / path
    text, n = re.subn(pattern, repl, p.read_text(), count=1, flags=re.M)
    if n != 1:
        sys.exit(f"make deb: {path}: no match for {pattern!r}")
    p.write_text(text)
if version:
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        sys.exit(f"make deb: VERSION must be dotted numbers, got {version!r}")
    sub("pyproject.toml", r'^version = ".*"$', f'version = "{version}"')
    sub("edged/__init__.py", r'^__version__ = ".*"$', f'__version__ = "{version}"')
if kind:
    if kind not in ("feature", "update", "platform"):
        sys.exit(f"make deb: RELEASE_KIND must be feature, update or platform, got {kind!r}")
    sub("edged/licensing/release.py", r'^RELEASE_KIND: ReleaseKind = ".*"$',
        f'RELEASE_KIND: ReleaseKind = "{kind}"')
if day:
    y, m, d = (int(x) for x in day.split("-"))
    sub("edged/licensing/release.py", r"^RELEASE_DATE = date\(.*\)$",
        f"RELEASE_DATE = date({y}, {m}, {d})")
PY

# The virtualenv, at its staged place, from Debian's interpreter.
venv=$stage$prefix
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)

# The pinned dependencies and the build backend as wheels, downloaded once per pin set:
# later builds (the test's second one) install offline from the wheelhouse.
reqs=$work/requirements.txt
"$python" - "$src/pyproject.toml" > "$reqs" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as fh:
    meta = tomllib.load(fh)
print("\n".join([*meta["project"]["dependencies"], *meta["build-system"]["requires"]]))
PY
stamp=$WHEELHOUSE/.complete-$(sha256sum "$reqs" | cut -c1-16)
if [ ! -e "$stamp" ]; then
    "${pip[@]}" download --only-binary=:all: -d "$WHEELHOUSE" -r "$reqs"
    touch "$stamp"
fi

# The staged tree (venv, unit, sysusers, tmpfiles, configuration, /usr/bin/edged) exactly as
# `make install DESTDIR=…` builds it; the gate is not run here but in preinst.
make --no-print-directory -s -C "$src" install-venv install-files DESTDIR="$stage" \
    INSTALL_PYTHON="$python" GATE_PYTHON="$venv/bin/python" \
    PIP_INSTALL_ARGS="--no-index --find-links $WHEELHOUSE" >/dev/null
# Another architecture: the same virtualenv (its scripts and layout do not depend on the
# architecture) with site-packages replaced by the wheels for that platform and the
# interpreter's version; Debian's python3 there provides the same /usr/bin/python3.
if [ "$arch" != "$host_arch" ]; then
    site=$(echo "$venv"/lib/python3*/site-packages)
    pyabi=cp$("$python" -c 'import sys; print("%d%d" % sys.version_info[:2])')
    cross=("--only-binary=:all:" --implementation cp --python-version "${pyabi#cp}"
        --abi "$pyabi" --abi abi3 --abi none
        --platform "manylinux2014_$platform" --platform "manylinux_2_28_$platform"
        --platform "manylinux_2_34_$platform")
    (cd "$src" && "$venv/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps \
        --no-index --find-links "$WHEELHOUSE" -w "$work/own" .)
    mkdir -p "$WHEELHOUSE/$arch"
    "${pip[@]}" install --no-compile --target "$work/site" --no-index \
        --find-links "$WHEELHOUSE/$arch" "${cross[@]}" "$work"/own/edged-*.whl 2>/dev/null || {
        "${pip[@]}" download -d "$WHEELHOUSE/$arch" --find-links "$work/own" "${cross[@]}" \
            "$work"/own/edged-*.whl
        rm -rf "$work/site"
        "${pip[@]}" install --no-compile --target "$work/site" --no-index \
            --find-links "$WHEELHOUSE/$arch" "${cross[@]}" "$work"/own/edged-*.whl
    }
    rm -rf "$site" "$work/site/bin"
    mv "$work/site" "$site"
    "$python" -m compileall -q -j 0 -s "$stage" -p / "$site" >/dev/null
fi

# pip and setuptools were needed to build the venv, not to run edged.
"${pip[@]}" uninstall -y pip setuptools >/dev/null 2>&1 || true
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1 "$venv"/bin/pip*
find "$venv/include" -depth -type d -empty -delete  # no C headers: lintian flags the empty dir

# The configuration conffile: the shipped example with the gateway id left to the operator,
# so `edged check-config` refuses it (and postinst does not start the daemon) until edited.
grep -q '^id = "gw-0001"' "$src/config/edged.toml" || {
    echo "make deb: config/edged.toml: no 'id = \"gw-0001\"' line to turn into the skeleton" >&2
    exit 1
}
sed 's|^id = "gw-0001"\(.*\)$|# id = "gw-0001"\1\n#   ^ REQUIRED: set the gateway id, then: edged check-config; systemctl start edged|' \
    "$src/config/edged.toml" > "$stage/etc/edged/edged.toml"

version=$(cut -d' ' -f1 "$venv/share/edged/release")
release=$(cat "$venv/share/edged/release")
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pynext=$("$python" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')

# Debian documentation files and the lintian overrides (each one explained in the file).
doc=$stage/usr/share/doc/edged
install -d "$doc" "$stage/usr/share/lintian/overrides" "$stage/usr/share/man/man1"
install -m 0644 "$here/copyright" "$doc/copyright"
{
    printf 'edged (%s) stable; urgency=medium\n\n' "$version"
    printf '  * edged %s (%s).\n\n' "$version" "$release"
    printf ' -- edged maintainers <edged@example.com>  %s\n' \
        "$(date -R -u -d "$(cut -d' ' -f2 "$venv/share/edged/release")")"
} | gzip -9n > "$doc/changelog.gz"
install -m 0644 "$here/edged.lintian-overrides" "$stage/usr/share/lintian/overrides/edged"
gzip -9n < "$here/edged.1" > "$stage/usr/share/man/man1/edged.1.gz"

# Control files: the gate embedded in preinst with this release.
ctl=$stage/DEBIAN
install -d "$ctl"
"$python" - "$here/preinst.in" "$src/tools/licensing/gate.py" "$release" > "$ctl/preinst" <<'PY'
import sys
template, gate, release = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3]
if "EDGED_GATE" in gate:
    sys.exit("make deb: gate.py contains the here-document delimiter")
sys.stdout.write(template.replace("@GATE@", gate.rstrip("\n")).replace("@RELEASE@", release))
PY
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$ctl"/
chmod 0755 "$ctl/preinst"
echo /etc/edged/edged.toml > "$ctl/conffiles"

# Normal permissions whatever the umask; the tree belongs to root (dpkg-deb --root-owner-group).
find "$stage" -path "$ctl" -prune -o -type d -exec chmod 0755 {} +
find "$stage" -path "$ctl" -prune -o -type f -exec chmod 0644 {} +
chmod 0755 "$venv"/bin/*
chmod 0644 "$ctl/conffiles"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
    | xargs -0 md5sum) > "$ctl/md5sums"
chmod 0644 "$ctl/md5sums"

# The C library the wheels' extension modules were built against (manylinux_2_NN tags): each
# wheel runs on the oldest glibc it names; the package needs the newest of those.
glibc=$("$python" - "$venv" <<'PY'
import re, sys
from pathlib import Path
need = (2, 17)
for wheel in Path(sys.argv[1]).glob("lib/python3*/site-packages/*.dist-info/WHEEL"):
    tags = re.findall(r"^Tag: \S+-manylinux_?(\d+)_(\d+)_", wheel.read_text(), re.M)
    legacy = {"1": (2, 5), "2010": (2, 12), "2014": (2, 17)}
    tags += [legacy[t] for t in re.findall(r"^Tag: \S+-manylinux(1|2010|2014)_", wheel.read_text(), re.M)]
    if tags:
        need = max(need, min((int(a), int(b)) for a, b in tags))
print("%d.%d" % need)
PY
)

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@SIZE@|$size|" \
    -e "s|@PYDEPENDS@|python3 (>= $pyver~), python3 (<< $pynext~), libc6 (>= $glibc)|" \
    "$here/control.in" > "$ctl/control"

deb=$OUT/edged_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"$DEB_COMPRESS" --build "$stage" "$deb" >/dev/null
echo "$deb"
