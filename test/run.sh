#!/usr/bin/env bash
# `npm test`: provisions what the tests need on a fresh Debian machine, then runs every
# test with node's test runner (via tsx). Set GPIOFABRIC_TEST_FILTER to a regex to run a
# subset of test files.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[npm test] %s\n' "$*"; }

# 1. Node dependencies (and the agent's native addon, built by the install script).
if [ ! -f node_modules/.package-lock.json ] || [ package.json -nt node_modules/.package-lock.json ]; then
  say "installing node modules"
  npm install --no-audit --no-fund
fi
node scripts/build-addon.mjs

# 2. Debian packages the integration tests use.
need_pkgs=()
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)  # promtool + prometheus: test/observability
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)  # gpio-fabric certs: test/security
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${need_pkgs[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "npm test needs: ${need_pkgs[*]}. Install them (Debian: sudo apt-get install ${need_pkgs[*]}) or run as root." >&2
    exit 1
  fi
fi

[ "${GPIOFABRIC_E2E:-1}" = 0 ] || bash test/e2e/provision.sh  # real-guest e2e: QEMU >= 9, Debian kernel, gpio-virtio.ko, initramfs (docs/e2e.md)

# 3. Run every test file.
mapfile -t files < <(find services test -name '*.test.ts' -not -path '*/node_modules/*' | sort | grep -E "${GPIOFABRIC_TEST_FILTER:-.}")
if [ "${GPIOFABRIC_E2E:-1}" = 0 ]; then
  # Explicit opt-out: the real-guest files are not run (and so not counted as passed).
  mapfile -t files < <(printf '%s\n' "${files[@]}" | grep -v -e '^test/e2e/' -e '^$' || true)
  say "GPIOFABRIC_E2E=0: real-guest tests (test/e2e/) NOT run"
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "no test files matched" >&2
  exit 1
fi
say "running ${#files[@]} test files"
# --test-timeout: a test that hangs fails after 5 minutes instead of holding CI to its
# limit; --test-force-exit: a file whose failed test leaked a timer or socket still ends
# (a failure must be reported, not turn into a hang).
exec node --import tsx --test --test-concurrency=2 --test-timeout=300000 --test-force-exit --test-reporter=spec "${files[@]}"
