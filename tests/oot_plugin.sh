#!/usr/bin/env bash
# A third-party plugin built against the installed header and pkg-config
# file only, then loaded and listed by plugboard.
. "${PB_SRCDIR:-.}/tests/lib.sh"

dest="$work/dest"
${MAKE:-make} -s -C "$PB_BUILDDIR" install-plugboardincludeHEADERS install-pkgconfigDATA \
  DESTDIR="$dest" >/dev/null
pcdir=$(dirname "$(find "$dest" -name plugboard-plugin.pc | head -1)")
check "pkg-config file installed" [ -f "$pcdir/plugboard-plugin.pc" ]
export PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$dest"
cflags=$(pkg-config --cflags plugboard-plugin)
check "cflags point at the installed header" [ -f "$(sed -e 's/^-I//' -e 's/ .*//' <<<"$cflags")/plugboard/plugin.h" ]

mkdir -p "$work/plugins" "$work/src"
# Only the example's own source: no access to the source tree's include/.
cp "$PB_SRCDIR/examples/plugins/hello/hello.c" "$work/src/"
# shellcheck disable=SC2086
cc -std=c11 -Wall -Wextra -Werror -shared -fPIC $cflags -o "$work/plugins/hello.so" \
  "$work/src/hello.c" $(pkg-config --libs plugboard-plugin)
check "hello.so built" [ -f "$work/plugins/hello.so" ]
check "hello.so exports only its entry point" bash -c \
  "nm -D --defined-only '$work/plugins/hello.so' | awk '{print \$3}' | grep -v '^_' | tr '\n' ' ' | grep -qx 'pb_plugin_entry '"

cat > "$work/plugboard.yaml" <<YAML
plugin_dir: $work/plugins
data_dir: $work/var
providers:
  hello: { plugin: hello, base_url: https://hello.example.com }
YAML
out=$("$PB_BIN" plugins --config "$work/plugboard.yaml"); rc=$?
check "plugins exits 0" [ "$rc" -eq 0 ]
check "hello listed" grep -qE "^hello	$work/plugins/hello.so	abi 1\.1	" <<<"$out"
finish
