#!/usr/bin/env bash
# Provisions what gpio-fabric's end-to-end tests need to boot a real Linux guest with the
# gpio-virtio driver and the libgpiod v2 tools, from Debian packages only:
#   - qemu-system-x86 >= 9 (bookworm-backports on Debian 12; 7.2 never offers guest interrupts)
#   - Debian's 6.12 kernel image (linux-image-<abi>-unsigned, downloaded, vmlinuz extracted)
#   - gpio-virtio.ko built out of tree from linux-source-6.12 (only drivers/gpio/gpio-virtio.c
#     is extracted) with gcc-12 against linux-headers-<abi>, linux-headers-<ver>-common and
#     linux-kbuild-<ver>, which are downloaded and unpacked into the cache rather than
#     installed (installing them pulls in the signed kernel image, initramfs-tools and
#     systemd, and rebuilds an initramfs for the host twice: minutes for nothing)
#   - levelirq.ko, the project's own interrupt-counting test module (test/e2e/guest/levelirq)
#   - an initramfs: busybox-static, the gpiod (>= 2) tools with their shared libraries and
#     loader, both modules and test/e2e/guest/init.sh as /init
# and writes a JSON manifest for the TypeScript harness (test/e2e/qemu.ts).
#
# Idempotent. Everything built is cached under ${GPIOFABRIC_CACHE:-$HOME/.cache/gpio-fabric}/e2e,
# keyed by the package versions and the hashes of the project files that go into the guest;
# a second run downloads and builds nothing. Needs root (apt-get, mknod, chroot).
#
# Environment:
#   GPIOFABRIC_CACHE      cache root (default $HOME/.cache/gpio-fabric)
#   GPIOFABRIC_E2E_KABI   kernel ABI to use, e.g. 6.12.117+deb12-amd64 (default: the one the
#                         linux-headers-6.12-amd64 metapackage points at, remembered in the cache)
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${GPIOFABRIC_CACHE:-$HOME/.cache/gpio-fabric}/e2e
KSERIES=6.12
export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 --no-install-recommends)

say() { printf '[e2e provision] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

T0=$(now)
[ "$(id -u)" = 0 ] || die "must run as root: it installs Debian packages with apt-get and builds an initramfs with device nodes (run: sudo bash test/e2e/provision.sh)"
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null || die "needs a Debian system (apt-get, dpkg-query)"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

# ---------------------------------------------------------------- helpers

# installed version of a package, empty when not installed
pkgver() { { dpkg-query -W -f='${db:Status-Abbrev}|${Version}\n' "$1" 2>/dev/null || true; } | awk -F'|' '$1 ~ /^ii/ { print $2 }'; }
ver_ge() { dpkg --compare-versions "$1" ge "$2"; }

CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
BACKPORTS="${CODENAME}-backports"

apt_updated=0
apt_update() {
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null
    apt_updated=1
  fi
}

# Is the backports suite already in the apt sources (one-line or deb822 format)?
backports_configured() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    grep -Eq "^[^#]*[[:space:]]${BACKPORTS}([[:space:]]|$)" "$f" && return 0
  done
  return 1
}

# Adds the backports suite using the archive URI (and signed-by option) of the machine's own
# source for the release suite, so no mirror is ever written into the project.
add_backports() {
  local uri="" signed="" f line
  # deb822 (*.sources): the first stanza with Types: deb whose Suites list the release itself
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    line=$(awk -v rel="$CODENAME" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " rel " ") && uris != "" && enabled != "no" && found == "") {
          split(uris, u, " "); found = u[1] "|" signed
        }
        types = ""; suites = ""; uris = ""; signed = ""; enabled = ""
      }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      {
        key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, ""); val = $0
        if (key == "types") types = val
        else if (key == "suites") suites = val
        else if (key == "uris") uris = val
        else if (key == "enabled") enabled = tolower(val)
        else if (key == "signed-by" && val ~ /^\//) signed = val
      }
      END { flush(); print found }' "$f")
    if [ -n "$line" ]; then uri=${line%%|*}; signed=${line#*|}; break; fi
  done
  # one-line format: deb [options] URI SUITE components
  if [ -z "$uri" ]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      line=$(awk -v rel="$CODENAME" '
        $1 == "deb" {
          opts = ""; i = 2
          if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { opts = opts " " $i; i++ } opts = opts " " $i; i++ }
          if ($(i + 1) == rel) { print $i "|" opts; exit }
        }' "$f")
      if [ -n "$line" ]; then
        uri=${line%%|*}
        signed=$(printf '%s\n' "${line#*|}" | grep -o 'signed-by=[^] ]*' | head -1 | cut -d= -f2 || true)
        break
      fi
    done
  fi
  [ -n "$uri" ] || die "cannot find the archive URI of suite '$CODENAME' in the apt sources; add ${BACKPORTS} (main) yourself"
  say "adding ${BACKPORTS} (main) from the archive of '$CODENAME'"
  {
    echo "# added by gpio-fabric test/e2e/provision.sh: QEMU >= 9 and libgpiod v2 tools"
    echo "Types: deb"
    echo "URIs: $uri"
    echo "Suites: ${BACKPORTS}"
    echo "Components: main"
    [ -n "$signed" ] && echo "Signed-By: $signed"
  } > /etc/apt/sources.list.d/gpio-fabric-backports.sources
  apt_updated=0
}

# ---------------------------------------------------------------- 1. host packages

T=$(now)
installed_any=()

# kernel ABI: explicit, remembered from an earlier run, or the metapackage's current target
KABI=${GPIOFABRIC_E2E_KABI:-}
if [ -z "$KABI" ] && [ -s "$CACHE/kabi" ]; then KABI=$(cat "$CACHE/kabi"); fi
if [ -z "$KABI" ]; then
  apt_update
  KABI=$(apt-cache depends "linux-headers-${KSERIES}-amd64" 2>/dev/null | awk '/Depends: linux-headers-/ { sub(/^linux-headers-/, "", $2); print $2; exit }')
  [ -n "$KABI" ] || die "cannot resolve the kernel ABI from linux-headers-${KSERIES}-amd64 (set GPIOFABRIC_E2E_KABI)"
fi

# libelf1, libssl3 and zlib1g are what the prebuilt tools of linux-kbuild link against
stable_pkgs=(busybox-static cpio kmod make gcc-12 libc6-dev libelf1 libssl3 zlib1g xz-utils)
need_stable=()
for p in "${stable_pkgs[@]}"; do [ -n "$(pkgver "$p")" ] || need_stable+=("$p"); done
need_bp=()
v=$(pkgver qemu-system-x86); { [ -n "$v" ] && ver_ge "$v" 1:9; } || need_bp+=(qemu-system-x86)
v=$(pkgver gpiod); { [ -n "$v" ] && ver_ge "$v" 2; } || need_bp+=(gpiod)

if [ ${#need_stable[@]} -gt 0 ] || [ ${#need_bp[@]} -gt 0 ]; then
  if [ ${#need_bp[@]} -gt 0 ] && ! backports_configured; then add_backports; fi
  apt_update
  if [ ${#need_stable[@]} -gt 0 ]; then
    say "installing ${need_stable[*]}"
    apt-get install "${APT_OPTS[@]}" "${need_stable[@]}" >/dev/null
    installed_any+=("${need_stable[@]}")
  fi
  if [ ${#need_bp[@]} -gt 0 ]; then
    # prefer the backports versions when the release's own are too old
    target=()
    if backports_configured; then target=(-t "$BACKPORTS"); fi
    say "installing ${need_bp[*]} ${target[*]}"
    apt-get install "${APT_OPTS[@]}" "${target[@]}" "${need_bp[@]}" >/dev/null
    installed_any+=("${need_bp[@]}")
  fi
fi
QEMU_VER=$(pkgver qemu-system-x86); GPIOD_VER=$(pkgver gpiod)
ver_ge "$QEMU_VER" 1:9 || die "qemu-system-x86 $QEMU_VER is older than 9 (guest interrupts need >= 9)"
ver_ge "$GPIOD_VER" 2 || die "gpiod $GPIOD_VER is not libgpiod v2"
KVER=$(cat "$CACHE/kver.$KABI" 2>/dev/null || true)
if [ -z "$KVER" ]; then
  apt_update
  KVER=$(apt-cache policy "linux-headers-$KABI" | awk '/Candidate:/ { print $2 }')
  { [ -n "$KVER" ] && [ "$KVER" != "(none)" ]; } || die "no candidate for linux-headers-$KABI (set GPIOFABRIC_E2E_KABI to an ABI the archive has)"
fi
BUSYBOX_VER=$(pkgver busybox-static); GCC_VER=$(pkgver gcc-12)
QEMU_BIN=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found after installing qemu-system-x86"
echo "$KABI" > "$CACHE/kabi"
echo "$KVER" > "$CACHE/kver.$KABI"
T_PKGS=$(secs "$T")

# ---------------------------------------------------------------- 2. kernel image and driver source

T=$(now)
KDIR="$CACHE/kernel/$KVER"
fetched=()
fetch_deb() { # package=version -> path of the .deb in $CACHE/debs
  mkdir -p "$CACHE/debs"
  (cd "$CACHE/debs" && apt-get download -q -o Acquire::Retries=3 "$1" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
  local name=${1%%=*}
  ls "$CACHE/debs/${name}_"*.deb 2>/dev/null | head -1
}
KSHORT=${KABI%-amd64}   # 6.12.117+deb12
KBUILD_DIR="$KDIR/headers/usr/src/linux-headers-$KABI"
if [ ! -f "$KDIR/vmlinuz" ] || [ ! -f "$KDIR/gpio-virtio.c" ] || [ ! -f "$KDIR/headers/.complete" ]; then
  apt_update
  mkdir -p "$KDIR"
  if [ ! -f "$KDIR/vmlinuz" ]; then
    say "downloading linux-image-$KABI-unsigned $KVER"
    deb=$(fetch_deb "linux-image-$KABI-unsigned=$KVER")
    [ -n "$deb" ] || die "download of linux-image-$KABI-unsigned=$KVER failed"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./boot/vmlinuz-$KABI" > "$KDIR/vmlinuz.tmp"
    mv "$KDIR/vmlinuz.tmp" "$KDIR/vmlinuz"
    rm -f "$deb"; fetched+=(linux-image)
  fi
  if [ ! -f "$KDIR/gpio-virtio.c" ]; then
    say "downloading linux-source-$KSERIES $KVER (only drivers/gpio/gpio-virtio.c is kept)"
    deb=$(fetch_deb "linux-source-$KSERIES=$KVER")
    [ -n "$deb" ] || die "download of linux-source-$KSERIES=$KVER failed"
    # the .deb holds usr/src/linux-source-6.12.tar.xz; stream it and stop at the one file
    # (tar stops at the first match, so the writers upstream may die of SIGPIPE: status ignored)
    { dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/linux-source-$KSERIES.tar.xz" \
        | xz -dc -T0 | tar -xO --occurrence=1 "linux-source-$KSERIES/drivers/gpio/gpio-virtio.c"; } > "$KDIR/gpio-virtio.c.tmp" 2>/dev/null || true
    [ -s "$KDIR/gpio-virtio.c.tmp" ] || die "gpio-virtio.c not found in linux-source-$KSERIES"
    mv "$KDIR/gpio-virtio.c.tmp" "$KDIR/gpio-virtio.c"
    rm -f "$deb"; fetched+=(linux-source)
  fi
  if [ ! -f "$KDIR/headers/.complete" ]; then
    say "downloading linux-headers-$KABI, linux-headers-$KSHORT-common, linux-kbuild-$KSHORT $KVER"
    rm -rf "$KDIR/headers"; mkdir -p "$KDIR/headers"
    for p in "linux-headers-$KABI" "linux-headers-$KSHORT-common" "linux-kbuild-$KSHORT"; do
      deb=$(fetch_deb "$p=$KVER")
      [ -n "$deb" ] || die "download of $p=$KVER failed"
      dpkg-deb -x "$deb" "$KDIR/headers"
      rm -f "$deb"
    done
    # the arch tree includes the common tree by absolute path: point it into the cache
    sed -i "s|/usr/src/linux-headers-$KSHORT-common/|$KDIR/headers/usr/src/linux-headers-$KSHORT-common/|" "$KBUILD_DIR/Makefile"
    [ -x "$KBUILD_DIR/scripts/mod/modpost" ] || die "linux-kbuild-$KSHORT did not unpack where the headers expect it"
    touch "$KDIR/headers/.complete"; fetched+=(linux-headers)
  fi
fi
[ -f "$KBUILD_DIR/Makefile" ] || die "kernel headers missing at $KBUILD_DIR"
T_KERNEL=$(secs "$T")

# ---------------------------------------------------------------- 3. build (cached by key)

T=$(now)
hash_files() { cat "$@" | sha256sum | cut -c1-64; }
KEY=$(printf '%s\n' "kabi=$KABI" "kver=$KVER" "qemu=$QEMU_VER" "gpiod=$GPIOD_VER" "busybox=$BUSYBOX_VER" "gcc=$GCC_VER" \
  "src=$(hash_files "${BASH_SOURCE[0]}" "$E2E_DIR/guest/init.sh" "$E2E_DIR/guest/serve.sh" "$E2E_DIR/guest/levelirq/levelirq.c" "$E2E_DIR/guest/levelirq/Kbuild" "$KDIR/gpio-virtio.c")" \
  | sha256sum | cut -c1-16)
OUT="$CACHE/builds/$KEY"
built=0
if [ ! -f "$OUT/.complete" ]; then
  built=1
  rm -rf "$OUT"; mkdir -p "$OUT"
  W=$(mktemp -d "$CACHE/work.XXXXXX")
  trap 'rm -rf "$W"' EXIT
  say "building gpio-virtio.ko and levelirq.ko against $KABI"
  # one kbuild run for both modules (most of its time is kbuild's own start-up)
  mkdir -p "$W/mod"
  cp "$KDIR/gpio-virtio.c" "$E2E_DIR/guest/levelirq/levelirq.c" "$W/mod/"
  echo 'obj-m := gpio-virtio.o levelirq.o' > "$W/mod/Kbuild"
  make -s -C "$KBUILD_DIR" M="$W/mod" CC=gcc-12 CONFIG_DEBUG_INFO_BTF_MODULES= -j"$(nproc)" modules >"$W/mod/build.log" 2>&1 \
    || { cat "$W/mod/build.log" >&2; die "module build failed"; }
  for m in gpio-virtio levelirq; do
    [ "$(modinfo -F vermagic "$W/mod/$m.ko" | cut -d' ' -f1)" = "$KABI" ] || die "$m.ko has the wrong vermagic"
    strip --strip-debug -o "$OUT/$m.ko" "$W/mod/$m.ko"
  done

  say "building the initramfs"
  R="$W/root"
  mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,lib/modules,proc,sys,dev,tmp,run,root,etc}
  cp /bin/busybox "$R/bin/busybox"
  for a in $("$R/bin/busybox" --list); do
    [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"
  done
  # the gpiod tools (libgpiod v2) with every shared library they need and the loader
  mapfile -t tools < <(dpkg -L gpiod | grep -E '^/usr/bin/gpio[a-z]+$')
  [ ${#tools[@]} -gt 0 ] || die "package gpiod lists no tools"
  for t in "${tools[@]}"; do
    cp "$t" "$R/usr/bin/"
    ldd "$t" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }'
  done | sort -u | while read -r lib; do
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
  done
  cp "$OUT/gpio-virtio.ko" "$OUT/levelirq.ko" "$R/lib/modules/"
  cp "$E2E_DIR/guest/init.sh" "$R/init"; chmod 755 "$R/init"
  cp "$E2E_DIR/guest/serve.sh" "$R/bin/gf-serve"; chmod 755 "$R/bin/gf-serve"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
  echo 'root:x:0:' > "$R/etc/group"
  mknod -m 600 "$R/dev/console" c 5 1
  mknod -m 666 "$R/dev/null" c 1 3
  # the tools must run inside the image exactly as packed
  chroot "$R" /usr/bin/gpiodetect --version >/dev/null || die "gpiodetect does not run inside the initramfs tree"
  (cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0 | gzip -6 -n) > "$OUT/initramfs.cpio.gz"
  cp "$KDIR/vmlinuz" "$OUT/vmlinuz"
  printf '%s\n' "${tools[@]##*/}" > "$OUT/tools.txt"
  touch "$OUT/.complete"
  rm -rf "$W"; trap - EXIT
  # older builds are superseded
  for d in "$CACHE"/builds/*; do [ "$d" = "$OUT" ] || rm -rf "$d"; done
fi
T_BUILD=$(secs "$T")

# ---------------------------------------------------------------- 4. manifest

QEMU_REPORTED=$("$QEMU_BIN" --version | head -1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1)
json_list() { local s="" x; for x in "$@"; do s="$s${s:+, }\"$x\""; done; printf '[%s]' "$s"; }
cat > "$CACHE/manifest.json.tmp" <<EOF
{
  "schema": 1,
  "key": "$KEY",
  "qemu": "$QEMU_BIN",
  "qemuVersion": "$QEMU_REPORTED",
  "kernel": "$OUT/vmlinuz",
  "kernelRelease": "$KABI",
  "initramfs": "$OUT/initramfs.cpio.gz",
  "modules": { "gpioVirtio": "$OUT/gpio-virtio.ko", "levelirq": "$OUT/levelirq.ko" },
  "guestTools": $(json_list $(cat "$OUT/tools.txt")),
  "readyMarker": "GPIOFABRIC-READY",
  "serveMarker": "GPIOFABRIC-SERVE-READY",
  "packages": {
    "qemu-system-x86": "$QEMU_VER",
    "gpiod": "$GPIOD_VER",
    "busybox-static": "$BUSYBOX_VER",
    "gcc-12": "$GCC_VER",
    "linux-headers-$KABI": "$KVER",
    "linux-image-$KABI-unsigned": "$KVER",
    "linux-source-$KSERIES": "$KVER"
  }
}
EOF
mv "$CACHE/manifest.json.tmp" "$CACHE/manifest.json"

what="installed: ${installed_any[*]:-none}; downloaded: ${fetched[*]:-none}; build $KEY $([ $built = 1 ] && echo built || echo reused)"
say "ready in $(secs "$T0")s (packages ${T_PKGS}s, kernel ${T_KERNEL}s, build ${T_BUILD}s) - qemu $QEMU_REPORTED, kernel $KABI, gpiod $GPIOD_VER; $what; manifest $CACHE/manifest.json"
