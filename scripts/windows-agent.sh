#!/usr/bin/env bash
# Build the node agent for Windows (x86_64-pc-windows-gnu) on this Linux machine and run it under Wine.
# (A copy of the team tool ../shared/tools/windows-agent.sh, kept here so a clean clone can run the
# Wine test of scripts/test-all.sh on its own.)
#
#   windows-agent.sh setup            install the cross toolchain and Wine (Debian packages; needs root)
#   windows-agent.sh check            type-check the node-agent crate for Windows
#   windows-agent.sh build            build jsagent.exe (prints its path)
#   windows-agent.sh run [ARGS...]    build, then run jsagent.exe ARGS under Wine
#   windows-agent.sh exec FILE.exe [ARGS...]   run any Windows test binary under Wine
#
# How: rustup here has only the Linux standard library, so the Windows one is compiled from source
# (-Zbuild-std) with Debian's rustc-web toolchain and its rust-web-src; mingw-w64 links; Wine runs it.
# Wine 8 lacks bcryptprimitives.dll!ProcessPrng, which Rust's std calls; a two-line shim DLL built
# here stands in for it next to the .exe (real Windows has the DLL; the shim is for Wine only).
# Wine 8 also aborts on sysinfo's CPU-usage queries (pdh.dll is unimplemented): code that samples
# CPU must tolerate that when run under Wine, or tests must not ask for CPU usage there.
# Run from the project root. The build goes to target/windows (kept apart from the normal target dir).
set -euo pipefail
TARGET=x86_64-pc-windows-gnu
PKG=${WINDOWS_AGENT_PKG:-node-agent}
BIN=${WINDOWS_AGENT_BIN:-jsagent}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR_WINDOWS:-target/windows}
export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CC_x86_64_pc_windows_gnu=x86_64-w64-mingw32-gcc AR_x86_64_pc_windows_gnu=x86_64-w64-mingw32-ar
export WINEDEBUG=${WINEDEBUG:--all} WINEPREFIX=${WINEPREFIX:-/tmp/jsacc-wineprefix}
CARGO=/usr/bin/cargo

setup() {
  local need=()
  for p in rustc-web cargo-web rust-web-src binutils-mingw-w64-x86-64 gcc-mingw-w64-x86-64 wine64; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}
shim() {
  local dir=$1
  [[ -f $dir/bcryptprimitives.dll ]] && return
  local src; src=$(mktemp --suffix=.c)
  printf '%s\n' '#include <windows.h>' '#include <ntsecapi.h>' \
    '__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE p, SIZE_T n) { return RtlGenRandom(p, (ULONG)n); }' >"$src"
  x86_64-w64-mingw32-gcc -shared -o "$dir/bcryptprimitives.dll" "$src" -ladvapi32
  rm -f "$src"
}
build() {
  setup
  "$CARGO" build -q -Zbuild-std=std,panic_abort --target $TARGET -p "$PKG" --bin "$BIN" "$@" >&2
  local dir=$CARGO_TARGET_DIR/$TARGET/debug
  shim "$dir"
  echo "$dir/$BIN.exe"
}
case ${1:-} in
  setup) setup ;;
  check) setup; shift; "$CARGO" check -Zbuild-std=std,panic_abort --target $TARGET -p "$PKG" --all-targets "$@" ;;
  build) shift; build "$@" ;;
  run) shift; exe=$(build); wine "$exe" "$@" ;;
  exec) shift; exe=$1; shift; setup; shim "$(dirname "$exe")"; wine "$exe" "$@" ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac
