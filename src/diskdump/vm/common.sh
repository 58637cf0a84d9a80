# SPDX-License-Identifier: GPL-2.0-or-later
# Shared by every guest /init of the diskdump QEMU tier (busybox sh). Sourced, not run.
# /etc/diskdump-init.env (written by the initramfs builder) and /etc/diskdump-vm.env
# (written by the QEMU harness) set the variables used below.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
say() { echo "DISKDUMP-VM: $*"; echo "diskdump-vm: $*" > /dev/kmsg 2>/dev/null; }

setup_base() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    mkdir -p /dev/shm /tmp && mount -t tmpfs tmpfs /tmp
    for env in /etc/diskdump-init.env /etc/diskdump-vm.env; do
        [ -f "$env" ] && . "$env"
    done
    if [ -f /etc/modules.order ]; then
        while read -r module; do
            insmod "/lib/modules/$module.ko" || say "insmod $module failed"
        done < /etc/modules.order
    fi
    # block devices appear asynchronously after virtio_blk loads
    tries=0
    while [ -n "$WAIT_DISK" ] && [ ! -b "$WAIT_DISK" ] && [ "$tries" -lt 50 ]; do
        sleep 0.1; tries=$((tries + 1))
    done
}

# A small workload so memory holds real data: page cache (tmpfs files), anonymous
# memory held by sleeping shells, a few processes.
run_workload() {
    mkdir -p /tmp/work
    i=0
    while [ "$i" -lt 8 ]; do
        head -c 1048576 /dev/urandom > "/tmp/work/random.$i"
        i=$((i + 1))
    done
    seq 1 200000 > /tmp/work/numbers.txt
    for n in 1 2 3; do
        sh -c 'blob=$(head -c 4194304 /dev/zero | tr "\0" "D"); echo "holder $$ ${#blob}" > /tmp/work/holder.$$; exec sleep 100000' &
    done
    sleep 1
    say "workload ready: $(ls /tmp/work | wc -l) files, $(ps | wc -l) processes"
}
