#!/bin/sh
# Make sure libvirt with QEMU, dnsmasq, iptables and nftables (the network driver's DHCP, NAT and firewall) and
# what the tiny test guest needs are installed and configured for a machine without systemd,
# where libvirtd runs as root started by hand (localcluster/libvirtd.py starts virtlogd and
# libvirtd; this script starts nothing).
#
# Idempotent, and costs nothing on a prepared machine: packages are only installed when
# dpkg-query says they are missing, and the configuration edits are no-ops once made.
#
# Another apt or dpkg run (an unattended upgrade, another engineer's install) holds dpkg's
# locks: this script waits up to ENSURE_LIBVIRT_LOCK_WAIT_S seconds (default 600) for it,
# saying so, then fails naming the process that holds them.
set -eu

# libvirt-clients: virsh, which every operator reaches for on a hypervisor.
PACKAGES="qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
pkg-config gcc python3-dev busybox-static genisoimage dnsmasq-base iproute2 util-linux procps iptables nftables"
LOCK_WAIT_S=${ENSURE_LIBVIRT_LOCK_WAIT_S:-600}
# What apt-get update and install lock; dpkg's are fcntl locks, which flock(1) cannot see.
PACKAGE_LOCKS="/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock"

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

    # The pid of a process holding one of PACKAGE_LOCKS; empty if none does (util-linux's
    # lslocks, which Debian always has, reads /proc/locks).
    lock_holder() {
        lslocks --noheadings --raw --output PID,PATH 2>/dev/null | while read -r pid path; do
            case " $PACKAGE_LOCKS " in *" $path "*) echo "$pid"; break ;; esac
        done
    }
    wait_for_package_locks() {
        waited=0
        while holder=$(lock_holder) && [ -n "$holder" ]; do
            what="pid $holder, $(cat "/proc/$holder/comm" 2>/dev/null || echo gone)"
            if [ "$waited" -ge "$LOCK_WAIT_S" ]; then
                echo "ensure-libvirt: another apt/dpkg run ($what) still holds dpkg's lock after" \
                    "${LOCK_WAIT_S}s; let it finish, then run this again" >&2
                exit 1
            fi
            [ "$waited" -gt 0 ] || echo "ensure-libvirt: waiting up to ${LOCK_WAIT_S}s for another" \
                "apt/dpkg run ($what) to release dpkg's lock" >&2
            sleep 2
            waited=$((waited + 2))
        done
    }
    # DPkg::Lock::Timeout: apt waits too, for a run that starts between our look and its own.
    # shellcheck disable=SC2086
    apt_install() {
        wait_for_package_locks
        apt-get -o DPkg::Lock::Timeout="$LOCK_WAIT_S" install -y --no-install-recommends $missing
    }
    # Try the existing package lists first: apt-get update is slow and usually unnecessary.
    apt_install || { wait_for_package_locks && apt-get update && apt_install; }
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
