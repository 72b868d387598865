#!/bin/sh
# Make sure the Debian packages the tests use beyond a hypervisor's are installed: what builds
# the test cloud image (localcluster/cloudimage.py: mmdebstrap, GRUB's BIOS boot images and
# grub-mkimage, mke2fs, qemu-img), what the network tests send and watch packets with
# (ping, iperf3, tcpdump) and read the kernel's sets with (ipset), and the browser the web
# console's tests drive (chromium: Playwright runs Debian's, never one it downloads), and
# systemd for systemd-analyze, with which tests/test_etc.py verifies etc/systemd/'s units (it
# skips that where the tool is missing; the package alone does not make systemd the init: that
# is systemd-sysv).
# Idempotent, and costs nothing on a prepared machine.
set -eu

PACKAGES="mmdebstrap grub-common grub-pc-bin e2fsprogs qemu-utils iputils-ping iperf3 tcpdump ipset chromium systemd"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *" ok installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-test-tools: missing packages:$missing; as root run: apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086  # one word per package, on purpose
apt-get install -y -q --no-install-recommends $missing >/dev/null
