#!/bin/sh
# meson install into a staging root and use it the way a user would: a C
# program built with nothing but `pkg-config --cflags --libs grist`, the
# Python package finding its library without GRIST_LIB, the installed
# programs' run path, the docs the systemd unit names.
#   sh tests/install/check.sh BUILD_DIR
set -eu
build=$1
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >/dev/null
prefix=$(meson introspect "$build" --buildoptions |
         /usr/bin/python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
libdir=$(find "$dest$prefix" -name 'libgrist.so.*.*' -printf '%h\n' | head -1)
fail() { echo "install: $*" >&2; exit 1; }
for f in bin/gristd bin/gristctl include/grist/client.h include/grist/sketch.h \
         share/doc/grist/README.md; do
    [ -e "$dest$prefix/$f" ] || fail "$f not installed"
done
[ -n "$libdir" ] || fail "libgrist not installed"
[ -e "$libdir/pkgconfig/grist.pc" ] || fail "grist.pc not installed"

# a C program: pkg-config is all it needs
cat >"$dest/prog.c" <<'C'
#include <grist/client.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    /* the job seed every rank derives from the job id (no round trip) */
    uint32_t a = grist_sketch_job_seed("install-check"), b = grist_sketch_job_seed("install-check");
    const char *e = grist_strerror(GRIST_EBADLEN);
    if (a != b || a == 0 || !e || !*e)
        return 1;
    printf("seed %u, %s\n", a, e);
    return 0;
}
C
flags=$(PKG_CONFIG_PATH="$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest" pkg-config --cflags --libs grist)
# (-rpath-link only because of the staging root: the installed libgrist finds
# its neighbours through its run path, which names the real prefix)
cc -o "$dest/prog" "$dest/prog.c" $flags -Wl,-rpath-link,"$libdir" || fail "cc $flags failed"
LD_LIBRARY_PATH="$libdir" "$dest/prog" >/dev/null || fail "the pkg-config program failed"

# the installed programs find the installed libraries through their run path
readelf -d "$dest$prefix/bin/gristd" | grep -q "RUNPATH.*$prefix" || fail "gristd has no run path to $prefix"
readelf -d "$dest$prefix/bin/gristctl" | grep -q "RUNPATH.*$prefix" || fail "gristctl has no run path"

# the Python package: importable from the site directory, and it names the
# installed library (the staging root stands in for /)
site=$(find "$dest$prefix" -path '*-packages/grist/_native.py' -printf '%h\n' | head -1)
[ -n "$site" ] || fail "Python package not installed"
want=$(basename "$(ls "$libdir"/libgrist.so.*.*)")
env -u GRIST_LIB /usr/bin/python3 - "$site" "$prefix" "$want" <<'PY' || fail "Python package check"
import importlib.util, os, sys
site, prefix, want = sys.argv[1:]
spec = importlib.util.spec_from_file_location("inst", os.path.join(site, "_install.py"))
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
assert m.LIBGRIST.startswith(prefix + "/") and m.LIBGRIST.endswith("/" + want), m.LIBGRIST
PY
# ... and loads it from there, with no GRIST_LIB and no source tree around
mkdir -p "$dest/py/grist"
cp "$site"/*.py "$dest/py/grist/"
sed -i "s|^LIBGRIST = .*|LIBGRIST = \"$libdir/$want\"|" "$dest/py/grist/_install.py"
(cd "$dest" && env -u GRIST_LIB PYTHONPATH="$dest/py" LD_LIBRARY_PATH="$libdir" /usr/bin/python3 -c '
import grist, sys
assert grist.lib_path.startswith(sys.argv[1]), grist.lib_path
print("python:", grist.lib_path)' "$dest") || fail "the installed Python package did not load its library"
echo "install: ok"
