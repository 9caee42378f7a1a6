# NixOS module for subvault: atomic, incremental restic backups of btrfs
# subvolumes, run on a schedule by a daemon steered over D-Bus.
#
#   imports = [ /path/to/subvault/packaging/nixos/module.nix ];
#   services.subvault = {
#     enable = true;
#     package = pkgs.callPackage ./subvault-package.nix { };  # your build: not in nixpkgs yet
#     settings = import /path/to/subvault/packaging/nixos/example-settings.nix;
#   };
#
# subvault is licensed under the Apache License 2.0 (LICENSE at the top of
# the repository). A NixOS module's meta knows only maintainers and docs, so
# the license is the package's: meta.license = lib.licenses.asl20 in the
# derivation docs/install.md shows.
#
# docs/install.md says more. The system unit below mirrors
# packaging/subvault.service directive for directive, and the user unit
# packaging/subvault-notify.service; cmd/subvault/nixos_test.go checks that
# they stay in step. The bus policy, polkit actions and journal catalog are
# taken from packaging/ next to this file, and so are the udev rule (with
# its unit subvault-target@, mirrored too), the Prometheus alert
# rules and the Grafana dashboard (the read-only options prometheusRules and
# grafanaDashboard).
{ config, lib, pkgs, ... }:

let
  cfg = config.services.subvault;

  yaml = pkgs.formats.yaml { };
  configFile = yaml.generate "subvault-config.yaml" cfg.settings;

  subvault = "${cfg.package}/bin/subvault";

  # The [Service] section of packaging/subvault.service, which says why.
  serviceConfig = {
    Type = "notify";
    NotifyAccess = "main";
    BusName = "org.subvault.Subvault1";
    ExecStartPre = "${subvault} check-config --quiet";
    ExecStart = "${subvault} daemon";
    ExecReload = [
      "${subvault} check-config --quiet"
      "${pkgs.coreutils}/bin/kill -HUP $MAINPID"
    ];
    WatchdogSec = "60s";
    Restart = "on-failure";
    RestartSec = "10s";
    KillMode = "mixed";
    TimeoutStopSec = "90s";

    StateDirectory = "subvault";
    StateDirectoryMode = "0700";
    CacheDirectory = "subvault";
    CacheDirectoryMode = "0700";
    ConfigurationDirectory = "subvault";
    RuntimeDirectory = "subvault";
    RuntimeDirectoryMode = "0755";
    UMask = "0077";

    CapabilityBoundingSet = [
      "CAP_SYS_ADMIN"
      "CAP_SYS_CHROOT"
      "CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE"
      "CAP_CHOWN CAP_FOWNER CAP_FSETID CAP_SETFCAP"
    ];
    AmbientCapabilities = "";
    NoNewPrivileges = true;

    SystemCallFilter = [
      "@system-service"
      "mount open_tree move_mount mount_setattr chroot fsopen fsconfig fsmount"
      "~@resources"
    ];
    SystemCallErrorNumber = "EPERM";
    SystemCallArchitectures = "native";
    RestrictNamespaces = "mnt";
    RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6";
    MemoryDenyWriteExecute = true;
    LockPersonality = true;
    RestrictRealtime = true;

    PrivateDevices = false;
    DevicePolicy = "closed";
    DeviceAllow = "block-* rw";
    ProtectSystem = "full";
    PrivateTmp = true;
    ProtectKernelModules = true;
    PrivateMounts = true;
    ProtectKernelTunables = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    # Not set, on purpose (packaging/subvault.service says why): ProtectHome,
    # RestrictSUIDSGID, PrivateNetwork, PrivateUsers, User, DynamicUser.
  };

  # packaging/org.subvault.Subvault1.service: a call to the daemon starts
  # the unit through its alias (NixOS makes the alias whenever the module is
  # enabled; Debian only while the service is enabled).
  activationFile = pkgs.writeText "org.subvault.Subvault1.service" ''
    [D-BUS Service]
    Name=org.subvault.Subvault1
    Exec=${pkgs.coreutils}/bin/false
    User=root
    SystemdService=dbus-org.subvault.Subvault1.service
  '';

  # What the bus, polkit and journald read, as a package for
  # services.dbus.packages and the system profile.
  systemFiles = pkgs.runCommand "subvault-system-files" { } ''
    install -D -m 0644 ${../org.subvault.Subvault1.conf} $out/share/dbus-1/system.d/org.subvault.Subvault1.conf
    install -D -m 0644 ${activationFile} $out/share/dbus-1/system-services/org.subvault.Subvault1.service
    install -D -m 0644 ${../org.subvault.policy} $out/share/polkit-1/actions/org.subvault.policy
    install -D -m 0644 ${../subvault.catalog} $out/lib/systemd/catalog/subvault.catalog
    install -D -m 0644 ${../udev/90-subvault.rules} $out/lib/udev/rules.d/90-subvault.rules
  '';

  # The reset at boot (reset.enable): what the initrd reads is only the reset
  # section and settings.state_dir (packaging/initrd-config does the same on
  # Debian): the initrd is in the store, readable by every user.
  resetSettings = {
    reset = cfg.settings.reset or { };
  } // lib.optionalAttrs ((cfg.settings.settings or { }) ? state_dir) {
    settings.state_dir = cfg.settings.settings.state_dir;
  };
  resetConfigFile = yaml.generate "subvault-reset.yaml" resetSettings;
  # NixOS's systemd initrd mounts the root from its own fstab, not from
  # root= on the kernel command line, which `subvault reset run` reads: it
  # gets the root file system's device and options from fileSystems."/",
  # then the real command line (subvault.reset=0, resume=, a root= given
  # at the boot prompt, which comes later and so counts).
  rootFs = config.fileSystems."/" or { };
  resetCmdline = lib.concatStringsSep " " (
    lib.optional (rootFs ? device) "root=${rootFs.device}"
    ++ lib.optional ((rootFs.options or [ ]) != [ ]) "rootflags=${lib.concatStringsSep "," rootFs.options}"
  );

  # packaging/subvault-target@.service, which says why: the udev rule above
  # starts an instance, named by the filesystem UUID, for each btrfs
  # filesystem that appears; it tells the daemon (TargetAppeared).
  targetUnit = {
    description = "subvault: btrfs filesystem %i appeared";
    documentation = [ "man:subvault-daemon(8)" ];
    requires = [ "dbus.socket" ];
    after = [ "dbus.socket" "subvault.service" ];
    serviceConfig = {
      Type = "oneshot";
      ExecCondition = "${config.systemd.package}/bin/systemctl --quiet is-active subvault.service";
      ExecStart = "${config.systemd.package}/bin/busctl --timeout=30 --auto-start=no call org.subvault.Subvault1 /org/subvault/Subvault1 org.subvault.Subvault1.Manager TargetAppeared s %i";

      CapabilityBoundingSet = "";
      NoNewPrivileges = true;
      RestrictAddressFamilies = "AF_UNIX";
      IPAddressDeny = "any";
      PrivateNetwork = true;
      PrivateDevices = true;
      PrivateTmp = true;
      ProtectSystem = "strict";
      ProtectHome = true;
      ProtectKernelTunables = true;
      ProtectKernelModules = true;
      ProtectKernelLogs = true;
      ProtectControlGroups = true;
      ProtectClock = true;
      ProtectHostname = true;
      RestrictNamespaces = true;
      RestrictRealtime = true;
      RestrictSUIDSGID = true;
      LockPersonality = true;
      MemoryDenyWriteExecute = true;
      SystemCallArchitectures = "native";
      SystemCallFilter = "@system-service";
    };
  };
in
{
  options.services.subvault = {
    enable = lib.mkEnableOption "subvault, the daemon that backs up btrfs subvolumes with restic";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.subvault or (throw ''
        services.subvault.package: subvault is not in nixpkgs yet; set this
        option to your own build of it (docs/install.md has a derivation).
      '');
      defaultText = lib.literalExpression "pkgs.subvault";
      description = ''
        The subvault package (it provides bin/subvault). subvault is not in
        nixpkgs yet: pass your own build.
      '';
    };

    settings = lib.mkOption {
      type = yaml.type;
      default = {
        plans = { };
      };
      example = lib.literalExpression "import ./example-settings.nix";
      description = ''
        The configuration, written to /etc/subvault/config.yaml: the keys
        `repositories`, `plans` and `settings` of subvault.yaml(5)
        (docs/configuration.md). The default has no plans: the daemon runs
        and does nothing. The file is in the Nix store, readable by every
        user: keep passwords out of it and name them with `password_file`,
        `password_command` or `credential` instead. A notify URL (a
        healthchecks check, an ntfy topic) is readable there too.
      '';
    };

    # Read-only: where the module's own copy of the monitoring files is,
    # for the machine that runs Prometheus or Grafana (it imports this
    # module too, enabled or not). docs/monitoring.md says how to use them.
    prometheusRules = lib.mkOption {
      type = lib.types.path;
      readOnly = true;
      default = ../prometheus/subvault-alerts.yml;
      description = ''
        subvault's Prometheus alert rules (failed, overdue and stalled
        backups, no success for days, stale metrics):
        `services.prometheus.ruleFiles = [ config.services.subvault.prometheusRules ];`
      '';
    };

    grafanaDashboard = lib.mkOption {
      type = lib.types.path;
      readOnly = true;
      default = ../grafana/subvault-dashboard.json;
      description = ''
        subvault's one-page Grafana dashboard (its Prometheus data source is
        the variable DS_PROMETHEUS), to provision or import.
      '';
    };

    reset.enable = lib.mkEnableOption ''
      the reset at boot of the subvolumes in settings.reset (docs/install.md,
      "The reset at boot"): a unit in the systemd initrd
      (boot.initrd.systemd.enable) runs `subvault reset run` after the root
      device appears and before the root file system is mounted
    '';

    notify.enable = lib.mkEnableOption ''
      desktop notifications of failed and overdue backups (the user unit
      subvault-notify, for every user with a graphical session)
    '';
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      environment.systemPackages = [ cfg.package systemFiles ];
      environment.etc."subvault/config.yaml" = {
        source = configFile;
        mode = "0600";
      };

      services.dbus.packages = [ systemFiles ];
      # The udev rule that starts subvault-target@<uuid> when a btrfs
      # filesystem appears.
      services.udev.packages = [ systemFiles ];
      systemd.services."subvault-target@" = targetUnit;
      security.polkit.enable = true;

      systemd.services.subvault = {
        description = "subvault backup daemon";
        documentation = [ "man:subvault-daemon(8)" "man:subvault.yaml(5)" ];
        requires = [ "dbus.socket" ];
        after = [ "dbus.socket" "network-online.target" ];
        wants = [ "network-online.target" ];
        unitConfig = {
          StartLimitIntervalSec = "5min";
          StartLimitBurst = 5;
        };
        wantedBy = [ "multi-user.target" ];
        aliases = [ "dbus-org.subvault.Subvault1.service" ];
        # What the daemon runs, looked up in PATH: restic (settings.settings.restic
        # defaults to "restic") and btrfs receive (the sends to targets).
        path = [ pkgs.restic pkgs.btrfs-progs ];
        reloadTriggers = [ configFile ];
        inherit serviceConfig;
      };

      # NixOS's journalctl reads catalogs from systemd's own store path and
      # from /usr/local/lib/systemd/catalog only.
      systemd.tmpfiles.rules = [
        "L+ /usr/local/lib/systemd/catalog/subvault.catalog - - - - ${systemFiles}/lib/systemd/catalog/subvault.catalog"
      ];
      systemd.services.subvault-catalog = {
        description = "journal catalog of subvault";
        wantedBy = [ "multi-user.target" ];
        after = [ "systemd-tmpfiles-setup.service" ];
        restartTriggers = [ systemFiles ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${config.systemd.package}/bin/journalctl --update-catalog";
        };
      };
    }

    (lib.mkIf cfg.reset.enable {
      assertions = [
        {
          assertion = config.boot.initrd.systemd.enable;
          message = "services.subvault.reset.enable needs the systemd initrd: boot.initrd.systemd.enable = true";
        }
        {
          assertion = cfg.settings ? reset;
          message = "services.subvault.reset.enable: services.subvault.settings.reset names no subvolume to reset";
        }
      ];
      boot.initrd.supportedFilesystems = [ "btrfs" ];
      boot.initrd.systemd.storePaths = [ subvault ];
      boot.initrd.systemd.contents."/etc/subvault/config.yaml".source = resetConfigFile;
      # packaging/subvault-reset.service, which says why; only ExecStart
      # differs (the root device comes from fileSystems."/", see resetCmdline).
      boot.initrd.systemd.services.subvault-reset = {
        description = "subvault reset of subvolumes to their clean snapshots";
        documentation = [ "man:subvault.yaml(5)" ];
        after = [ "initrd-root-device.target" "local-fs-pre.target" "systemd-hibernate-resume.service" ];
        before = [ "sysroot.mount" ];
        wantedBy = [ "initrd.target" ];
        unitConfig = {
          DefaultDependencies = false;
          ConditionPathExists = [ "/etc/initrd-release" "/etc/subvault/config.yaml" ];
        };
        serviceConfig = {
          Type = "oneshot";
          StandardOutput = "journal+console";
        };
        script = ''
          echo ${lib.escapeShellArg resetCmdline} "$(cat /proc/cmdline)" > /run/subvault-reset.cmdline
          exec ${subvault} reset run --cmdline /run/subvault-reset.cmdline
        '';
      };
    })

    (lib.mkIf cfg.notify.enable {
      # The [Unit] and [Service] of packaging/subvault-notify.service.
      systemd.user.services.subvault-notify = {
        description = "subvault desktop notifications";
        documentation = [ "man:subvault(1)" ];
        partOf = [ "graphical-session.target" ];
        after = [ "graphical-session.target" ];
        wantedBy = [ "default.target" ];
        serviceConfig = {
          Type = "exec";
          ExecStart = "${subvault} notify";
          Restart = "on-failure";
          RestartSec = 5;
        };
      };
    })
  ]);
}
