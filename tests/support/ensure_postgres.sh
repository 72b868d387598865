#!/bin/sh
# Make sure PostgreSQL server binaries exist for localcluster/pgserver.py, which runs its
# own throwaway server: the distro's cluster is neither started nor used.
# Idempotent: does nothing when /usr/lib/postgresql/*/bin/initdb already exists.
set -eu

for initdb in /usr/lib/postgresql/*/bin/initdb; do
    [ -x "$initdb" ] && exit 0
done

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure_postgres: PostgreSQL server binaries missing; as root run: apt-get install postgresql" >&2
    exit 1
fi

# Without systemd, the package's postinst would start its cluster through invoke-rc.d;
# a policy-rc.d answering 101 forbids that. Only add one if the system has none.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y --no-install-recommends postgresql; }
# Try the existing package lists first: apt-get update is slow and usually unnecessary.
apt_install || { apt-get update && apt_install; }
