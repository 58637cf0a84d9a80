#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the diskdump capture initramfs (built by `diskdump initramfs build`).
# In the capture kernel (/proc/vmcore exists) it runs `diskdump dump`, then the
# configured final action. Booted as a first kernel inside the QEMU harness
# (/etc/first-stage.sh present), it hands over to that script instead.
. /etc/common.sh
setup_base

final_action() {
    say "final action: $FINAL_ACTION"
    sync
    case "$FINAL_ACTION" in
        poweroff) poweroff -f ;;
        halt) halt -f ;;
        shell) exec setsid sh -c 'exec sh </dev/console >/dev/console 2>&1' ;;
        *) reboot -f ;;
    esac
    sleep 60
}

if [ -e /proc/vmcore ]; then
    say "capture kernel $(uname -r): /proc/vmcore holds $(stat -c %s /proc/vmcore) bytes"
    say "memory: $(grep -E '^(MemTotal|MemFree|MemAvailable):' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
    say "running diskdump dump"
    diskdump dump --config /etc/diskdump.toml
    rc=$?
    say "diskdump dump exited with status $rc"
    final_action
elif [ -x /etc/first-stage.sh ]; then
    . /etc/first-stage.sh
else
    say "no /proc/vmcore: this is not a capture kernel"
    FINAL_ACTION=shell
    final_action
fi
