#!/bin/sh
# Make sure libvirt with QEMU, dnsmasq, iptables and nftables (the network driver's DHCP, NAT and firewall) and
# what the tiny test guest needs are installed and configured for a machine without systemd,
# where libvirtd runs as root started by hand (localcluster/libvirtd.py starts virtlogd and
# libvirtd; this script starts nothing).
#
# Idempotent, and costs nothing on a prepared machine: packages are only installed when
# dpkg-query says they are missing, and the configuration edits are no-ops once made.
set -eu

PACKAGES="qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-dev
pkg-config gcc python3-dev busybox-static genisoimage dnsmasq-base iproute2 util-linux procps iptables nftables"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *" ok installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -n "$missing" ] && [ "$(id -u)" -ne 0 ]; then
    echo "ensure-libvirt: missing packages:$missing; as root run: apt-get install$missing" >&2
    exit 1
fi

if [ -n "$missing" ]; then
    # Without systemd, postinst scripts would start libvirtd/virtlogd through invoke-rc.d;
    # a policy-rc.d answering 101 forbids that. Only add one if the system has none.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    apt_install() { apt-get install -y --no-install-recommends $missing; }
    # Try the existing package lists first: apt-get update is slow and usually unnecessary.
    apt_install || { apt-get update && apt_install; }
fi

[ "$(id -u)" -eq 0 ] || exit 0

# libvirtd's log directory (no systemd-tmpfiles here to create it).
mkdir -p /var/log/libvirt /var/log/libvirt/qemu /var/lib/libvirt/images /run/libvirt
# Debian ships the daemons' config files in libvirt-daemon-system (systemd units and all),
# which is not installed: libvirtd runs on its built-in defaults plus the settings below.
mkdir -p /etc/libvirt

# The user and group the qemu driver looks up even when told to run guests as root.
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
    useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt --no-create-home \
        --shell /usr/sbin/nologin libvirt-qemu
getent group libvirt >/dev/null || groupadd --system libvirt

# set_option FILE KEY VALUE: make `KEY = VALUE` the one active setting of KEY in FILE.
set_option() {
    file=$1 key=$2 value=$3
    [ -e "$file" ] || : > "$file"
    if grep -Eq "^[[:space:]]*$key[[:space:]]*=[[:space:]]*$value[[:space:]]*\$" "$file" &&
        [ "$(grep -Ec "^[[:space:]]*$key[[:space:]]*=" "$file")" -eq 1 ]; then
        return 0
    fi
    tmp="$file.ensure_libvirt.$$"
    grep -Ev "^[[:space:]]*$key[[:space:]]*=" "$file" > "$tmp" || true
    printf '%s = %s\n' "$key" "$value" >> "$tmp"
    cat "$tmp" > "$file"
    rm -f "$tmp"
}

# Guests run as root: files the tests make (kernels, overlays, serial logs) need no chown,
# and there is no AppArmor/SELinux profile to load in a container.
set_option /etc/libvirt/qemu.conf user '"root"'
set_option /etc/libvirt/qemu.conf group '"root"'
# libvirtd's own log, read back by localcluster/libvirtd.py when it will not start.
set_option /etc/libvirt/libvirtd.conf log_outputs '"3:file:/var/log/libvirt/libvirtd.log"'
