#!/bin/sh
# /bin/gf-serve: the command server the TypeScript harness (test/e2e/qemu.ts) talks to on
# the serial console. /init runs it instead of an interactive shell when the kernel command
# line has gpiofabric.serve=1.
#
# Input, one request per line:  <id> <base64 of a shell script>
# Output per request:           __GF_BEGIN_<id>__\n<output of the script>\n__GF_END_<id>__ <status>\n
# Echo is off and nothing is prompted, so the console carries only command output (and,
# rarely, an emergency kernel message). Each script runs in a fresh `sh` with stdin from
# /dev/null and stdout/stderr on the console. Ctrl-C (0x03) interrupts the running script.
stty -echo 2>/dev/null
mkdir -p /run/gf
trap 'echo "__GF_INTERRUPTED__"' INT
echo "GPIOFABRIC-SERVE-READY"
while IFS= read -r line; do
  id=${line%% *}
  b64=${line#* }
  case "$id" in ''|*[!0-9]*) echo "__GF_BAD_REQUEST__"; continue ;; esac
  f=/run/gf/$id.sh
  printf '__GF_BEGIN_%s__\n' "$id"
  if printf '%s' "$b64" | base64 -d > "$f" 2>/dev/null; then
    sh "$f" </dev/null
    st=$?
  else
    echo "gf-serve: request $id is not valid base64"
    st=125
  fi
  rm -f "$f"
  printf '\n__GF_END_%s__ %d\n' "$id" "$st"
done
echo "GPIOFABRIC-SERVE-EOF"
