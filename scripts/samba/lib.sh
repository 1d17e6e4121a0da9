# shellcheck shell=bash
# scripts/samba/lib.sh — helpers shared by the scripts in scripts/samba/.
# Sourced, not run: `. "$(dirname "$0")/lib.sh"`. Defines die/note, the
# domain directory checks, the env file reader, the loopback address check,
# an smb.conf [global] editor, random passwords and the LDAPS probe.

# The interpreter samba-tool runs under: a python3 earlier in PATH (pyenv,
# virtualenv) usually cannot import Samba's bindings.
# shellcheck disable=SC2034 # used by the scripts that source this file
SAMBA_PYTHON=/usr/bin/python3

# Marker file that says "this directory was made by scripts/samba/provision".
# shellcheck disable=SC2034 # used by the scripts that source this file
SAMBA_MARKER=.samba-scripts

die() {
  echo "samba ${SCRIPT_NAME:-script}: $*" >&2
  exit 1
}

note() {
  echo "samba ${SCRIPT_NAME:-script}: $*"
}

need_commands() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found; run scripts/samba/install first"
  done
}

need_root() {
  ((EUID == 0)) || die "must run as root ($*)"
}

# Absolute path of a domain directory; refuses characters that would need
# quoting in the env file (it is read by tests as plain KEY=VALUE lines).
abs_dir() {
  local d
  [[ -n "${1:-}" ]] || die "missing DIR argument"
  d="$(realpath -m -- "$1")"
  [[ "$d" =~ ^[A-Za-z0-9_./+-]+$ ]] || die "DIR must be a path of letters, digits and _./+- only: $d"
  printf '%s\n' "$d"
}

# Reads plain KEY=VALUE lines (no quoting, no expansion) into the shell.
read_env_file() {
  local key value
  while IFS='=' read -r key value; do
    [[ "$key" =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
    printf -v "$key" '%s' "$value"
  done <"$1"
}

# Reads DIR/env (written by provision) into the shell.
load_env() {
  [[ -f "$1/env" ]] || die "$1/env not found: provision $1 first (scripts/samba/provision)"
  read_env_file "$1/env"
}

valid_ipv4() {
  local ip=$1 o
  [[ "$ip" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
  IFS=. read -r -a o <<<"$ip"
  for x in "${o[@]}"; do
    ((10#$x <= 255)) || return 1
  done
}

address_assigned() {
  # awk reads to the end and decides: a `| grep -q` here could exit first
  # and fail the pipe under pipefail.
  ip -o -4 addr show | awk -v want="$1" '{ split($4, a, "/"); if (a[1] == want) found = 1 } END { exit !found }'
}

# Samba binds only addresses that are assigned to an interface: with
# `interfaces = 127.0.0.2` and no such address it logs "interpret_interface:
# can't determine interface for 127.0.0.2", "WARNING: no network interfaces
# found", stays up and listens nowhere, although the kernel routes all of
# 127/8 to lo and a plain bind(127.0.0.2) would work. So assign the address to
# lo when missing (not persistent: start repeats the check after a reboot).
ensure_address() {
  local ip=$1
  address_assigned "$ip" && return 0
  [[ "$ip" == 127.* ]] || die "$ip is not assigned to any interface (only loopback addresses are added automatically)"
  ((EUID == 0)) || die "$ip is not assigned to lo; as root: ip addr add $ip/8 dev lo"
  note "assigning $ip to lo (ip addr add $ip/8 dev lo)"
  ip addr add "$ip/8" dev lo || die "could not add $ip to lo (needs CAP_NET_ADMIN)"
  address_assigned "$ip" || die "$ip still not assigned after ip addr add"
}

# Sets KEY = VALUE in the [global] section of an smb.conf, replacing any
# existing line for KEY (compared case- and blank-insensitively).
set_global() {
  local conf=$1 key=$2 value=$3 tmp
  tmp="$(mktemp "$conf.XXXXXX")"
  awk -v key="$key" -v value="$value" '
    function norm(s) { gsub(/[ \t]+/, " ", s); sub(/^ /, "", s); sub(/ $/, "", s); return tolower(s) }
    function flush() { for (; held > 0; held--) print "" }
    /^[ \t]*$/ { held++; next }
    /^[ \t]*\[/ {
      if (in_global && !done) { print "\t" key " = " value; done = 1 }
      flush()
      in_global = (tolower($0) ~ /^[ \t]*\[global\]/)
      print; next
    }
    in_global && index($0, "=") > 0 {
      if (norm(substr($0, 1, index($0, "=") - 1)) == norm(key)) {
        if (!done) { flush(); print "\t" key " = " value; done = 1 }
        next
      }
    }
    { flush(); print }
    END {
      if (!done) { if (!in_global) { flush(); print "[global]" } print "\t" key " = " value }
      flush()
    }
  ' "$conf" >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$conf"
}

# The value Samba itself reads for a [global] parameter of a config file.
conf_value() {
  samba-tool testparm -s "$1" --suppress-prompt --parameter-name="$2" 2>/dev/null
}

# A random password that meets AD complexity (upper, lower, digit, symbol;
# 24 characters) and contains no character that needs quoting in shells,
# LDIF values or samba-tool's -U user%password.
random_password() {
  local r
  r="$(openssl rand -base64 48 | tr -dc 'A-Za-z0-9' | cut -c1-20)"
  ((${#r} == 20)) || die "could not generate a random password"
  printf 'Wb%s-7x\n' "$r"
}

# Seconds (with milliseconds) since a value of $EPOCHREALTIME.
elapsed_since() {
  local t0=${1/[.,]/} t1=${EPOCHREALTIME/[.,]/}
  local ms=$(((10#$t1 - 10#$t0) / 1000))
  printf '%d.%03d\n' $((ms / 1000)) $((ms % 1000))
}

# Writes a secret to a file created with mode 0600.
write_secret() {
  local file=$1 value=$2
  (umask 077 && printf '%s\n' "$value" >"$file")
  chmod 0600 "$file"
  hand_over "$file"
}

# When run through sudo, give the files tests read (env files, passwords, the
# CA certificate) to the invoking user, so a non-root test run can read them.
hand_over() {
  if ((EUID == 0)) && [[ -n "${SUDO_UID:-}" && -n "${SUDO_GID:-}" ]]; then
    chown "$SUDO_UID:$SUDO_GID" "$@"
  fi
}

# One LDAPS request for the root DSE, verifying the server certificate
# against CA (name checked against the IP in the URL). Exit status 0 when the
# DC answers.
ldaps_probe() {
  local url=$1 ca=$2
  LDAPTLS_CACERT="$ca" LDAPTLS_REQCERT=demand \
    timeout 5 ldapsearch -H "$url" -x -o nettimeout=3 -b "" -s base -LLL dnsHostName >/dev/null 2>&1
}

# Anything already listening on IP:PORT? (bash's /dev/tcp; no extra tools)
port_in_use() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# The process id in DIR/samba.pid if it is a live samba of DIR. Samba
# rewrites its command line ("samba: root process"), so recognise it by its
# executable and by its standard output, which start points at DIR/samba.log
# (or, if that cannot be read, by the pid file samba keeps in DIR/run).
running_pid() {
  local dir=$1 pid exe out
  [[ -s "$dir/samba.pid" ]] || return 1
  pid="$(<"$dir/samba.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [[ "${exe##*/}" == samba ]] || return 1
  if out="$(readlink "/proc/$pid/fd/1" 2>/dev/null)"; then
    [[ "$out" == "$dir/samba.log" ]] || return 1
  else
    [[ -s "$dir/run/samba.pid" && "$(tr -dc 0-9 <"$dir/run/samba.pid")" == "$pid" ]] || return 1
  fi
  printf '%s\n' "$pid"
}
