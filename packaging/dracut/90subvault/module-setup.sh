#!/bin/bash
# dracut module of subvault: /usr/lib/dracut/modules.d/90subvault/.
# Puts subvault, the reset's part of the configuration (initrd-config) and
# subvault-reset.service into a systemd initrd when /etc/subvault/config.yaml
# has a reset section (docs/reset.md); without one the module is left out.

SUBVAULT=/usr/bin/subvault
INITRD_CONFIG=/usr/lib/subvault/initrd-config

check() {
    [ -x "$SUBVAULT" ] && [ -x "$INITRD_CONFIG" ] || return 1
    env SUBVAULT="$SUBVAULT" "$INITRD_CONFIG" > /dev/null || return 1
    return 0
}

depends() {
    echo systemd btrfs
}

installkernel() {
    instmods btrfs
}

install() {
    local config
    config=$(env SUBVAULT="$SUBVAULT" "$INITRD_CONFIG") || return 1
    inst_binary "$SUBVAULT" /usr/bin/subvault
    mkdir -p "$initdir/etc/subvault"
    (umask 077 && printf '%s\n' "$config" > "$initdir/etc/subvault/config.yaml")
    inst_simple "$moddir/subvault-reset.service" "$systemdsystemunitdir/subvault-reset.service"
    $SYSTEMCTL -q --root "$initdir" enable subvault-reset.service
}
