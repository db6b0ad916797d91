# Shared by scripts/demo, scripts/test and scripts/bench: make the virtualenv and system tools ready.
# Idempotent and quiet when everything is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EMU_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

emu_python_ready() {
    local stamp="$VENV/.emu-installed"
    if [ ! -x "$PY" ]; then
        echo "emu: creating virtualenv in $VENV" >&2
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ]; then
        echo "emu: installing emu and its Python dependencies into $VENV" >&2
        "$PY" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
        # (This machine's pip config may name local mirror folders that do not exist: that noise is dropped.)
        "$PY" -m pip install -q --disable-pip-version-check -e "$ROOT[test]" 2> >(grep -v "^WARNING: Location '" >&2)
        touch "$stamp"
    fi
}

# Debian packages the interop, capture and namespace tests use. Installed when missing and root.
EMU_DEB_PACKAGES=(tshark tcpdump iproute2 bind9 bind9-dnsutils knot-dnsutils)

emu_system_tools_ready() {
    local missing=()
    command -v tshark >/dev/null 2>&1 || missing+=(tshark)
    command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    { command -v named >/dev/null 2>&1 || [ -x /usr/sbin/named ]; } || missing+=(bind9)
    command -v nsupdate >/dev/null 2>&1 || missing+=(bind9-dnsutils)
    command -v kdig >/dev/null 2>&1 || missing+=(knot-dnsutils)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "emu: missing ${missing[*]} (not root or no apt-get): tests that need them will be skipped" >&2
        return 0
    fi
    echo "emu: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || echo "emu: apt-get install ${missing[*]} failed: tests that need them will be skipped" >&2
    # named is started by the tests themselves; never leave the distribution's service running.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now named >/dev/null 2>&1 || true; fi
}
