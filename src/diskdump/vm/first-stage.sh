# SPDX-License-Identifier: GPL-2.0-or-later
# First kernel of the QEMU kdump cycle (sourced by /init after setup_base).
# Boot 1: arm (load the capture kernel), run a workload, panic by sysrq.
# Boot 2 (after the capture kernel's final action rebooted the machine): the dump
# device holds a dump; optionally run savecore as the systemd unit would; power off.

# exit status 1 is both "holds a dump" and "error": require the verdict text too
verdict=$(diskdump check --quiet --sample 1024 "$DUMP_DEVICE" 2>&1)
check_rc=$?
case "$verdict" in *": holds dump:"*) ;; *) [ "$check_rc" = 1 ] && check_rc=error ;; esac
if [ "$check_rc" = 1 ]; then
    say "rebooted: $DUMP_DEVICE holds a dump"
    if [ -n "$SAVECORE_DEVICE" ]; then
        mkdir -p /var/crash
        tries=0
        while [ ! -b "$SAVECORE_DEVICE" ] && [ "$tries" -lt 50 ]; do
            sleep 0.1; tries=$((tries + 1))
        done
        mount -t ext4 "$SAVECORE_DEVICE" /var/crash && {
            diskdump savecore --config /etc/diskdump.toml --dir /var/crash --compress zlib \
                --min-free 0
            say "savecore exited with status $?"
            umount /var/crash
        }
    fi
    say "cycle done, powering off"
    sync
    poweroff -f
fi

say "first kernel $(uname -r): check $DUMP_DEVICE gave $check_rc ($verdict), arming"
load_capture() {
    kexec -p /boot/vmlinuz --initrd=/boot/capture.img --append="$CAPTURE_APPEND"
}
if [ "$ARM_WITH" = "diskdump" ]; then
    # diskdump arm checks crashkernel= and loads the capture kernel itself ([capture])
    diskdump arm --config /etc/diskdump.toml
    arm_rc=$?
    if [ "$(cat /sys/kernel/kexec_crash_loaded)" != 1 ]; then
        say "FAILED: diskdump arm (status $arm_rc) did not load the capture kernel"
        sync
        poweroff -f
    fi
else
    load_capture
    arm_rc=$?
fi
say "arm exited with status $arm_rc; kexec_crash_loaded=$(cat /sys/kernel/kexec_crash_loaded)"
run_workload
say "panicking now"
sleep 1  # let the serial line drain: the panic stops the tty before its buffer empties
if [ "$ARM_WITH" = "diskdump" ]; then
    diskdump test --force --config /etc/diskdump.toml
    say "diskdump test --force returned $?: panicking with sysrq directly"
fi
echo c > /proc/sysrq-trigger
