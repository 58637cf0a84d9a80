#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the guest whose memory the host dumps over QMP (dump-guest-memory).
. /etc/common.sh
setup_base
run_workload
say "ready for dump-guest-memory on $(uname -r)"
while true; do sleep 60; done
