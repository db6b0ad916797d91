# Shared by scripts/demo, scripts/test and scripts/bench: make the virtualenv and system tools ready.
# Idempotent and quiet when everything is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EMU_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

emu_python_ready() {
    local stamp="$VENV/.emu-installed"
    if [ ! -x "$PY" ]; then
        command -v python3 >/dev/null 2>&1 || { echo "emu: python3 (3.11 or later) is needed: apt-get install python3" >&2; exit 1; }
        python3 -c "import sys; sys.exit(sys.version_info < (3, 11))" || {
            echo "emu: python3 is $(python3 -V 2>&1 | cut -d' ' -f2); emu needs 3.11 or later (set EMU_VENV to a 3.11 virtualenv)" >&2
            exit 1
        }
        if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
            # Debian and Ubuntu ship venv's pip bootstrap separately.
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                echo "emu: installing python3-venv" >&2
                apt-get update -qq >/dev/null 2>&1 || true
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 || true
            fi
            python3 -c "import ensurepip, venv" >/dev/null 2>&1 || {
                echo "emu: python3 cannot make virtualenvs here: install python3-venv (sudo apt-get install python3-venv)" >&2
                exit 1
            }
        fi
        echo "emu: creating virtualenv in $VENV" >&2
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ]; then
        echo "emu: installing emu and its Python dependencies into $VENV" >&2
        "$PY" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
        # (This machine's pip config may name local mirror folders that do not exist: that noise is dropped.)
        # PYTHONWARNINGS: setuptools' editable-install banner (a BuildBackendWarning) is not for emu's users.
        PYTHONWARNINGS=ignore "$PY" -m pip install -q --disable-pip-version-check -e "$ROOT[test]" 2> >(grep -v "^WARNING: Location '" >&2)
        touch "$stamp"
    fi
}

# Debian packages the interop, capture, directory and namespace tests use: command -> package.
EMU_DEB_TOOLS=(
    tshark:tshark tcpdump:tcpdump ip:iproute2 named:bind9 nsupdate:bind9-dnsutils kdig:knot-dnsutils
    ldapsearch:ldap-utils ldbadd:ldb-tools samba:samba-ad-dc samba-tool:samba smbclient:smbclient kinit:krb5-user
    iptables:iptables nft:nftables ethtool:ethtool tc:iproute2 curl:curl
    /usr/share/samba/setup/provision.ldif:samba-ad-provision
    /usr/lib/python3/dist-packages/markdown/__init__.py:python3-markdown
)

emu_system_tools_ready() {
    local missing=() entry cmd pkg
    for entry in "${EMU_DEB_TOOLS[@]}"; do
        cmd="${entry%%:*}"; pkg="${entry#*:}"
        # an absolute path names a data file the package ships (no command to look for)
        if [[ "$cmd" == /* ]]; then
            [ -e "$cmd" ] || [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
            continue
        fi
        if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/sbin/$cmd" ]; then
            [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "emu: missing ${missing[*]} (not root or no apt-get): tests that need them will be skipped (failed under CI=true)" >&2
        return 0
    fi
    echo "emu: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
    # Packages such as bind9 and samba would start their distribution services on install. emu's tests start
    # their own servers on their own ports, so for the length of this install only, and only when the machine
    # has no policy of its own, a policy-rc.d tells the package scripts not to start services. Nothing that
    # was already running is stopped, disabled or reconfigured.
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# emu scripts/_env.sh: no service starts during this install; removed afterwards\nexit 101\n' > "$policy"
        chmod 755 "$policy"; made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT  # also when the install is interrupted
    fi
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || echo "emu: apt-get install ${missing[*]} failed: tests that need them will be skipped (failed under CI=true)" >&2
    if [ -n "$made_policy" ]; then
        rm -f "$policy"
        trap - EXIT
    fi
    return 0
}
