# An example for services.subvault.settings (packaging/nixos/module.nix):
# the same keys as /etc/subvault/config.yaml, see subvault.yaml(5) or
# docs/configuration.md. A laptop whose root and /home go to a NAS every
# night, and whose PostgreSQL data goes there every hour.
#
#   services.subvault.settings = import ./example-settings.nix;
#
# cmd/subvault/nixos_test.go checks that subvault check-config accepts it.
{
  repositories = {
    nas = {
      # Anything restic accepts as a repository; the sftp user's ssh key is
      # root's, since the daemon runs restic as root.
      url = "sftp:backup@nas.lan:/srv/restic/laptop";
      # Exactly one of password_file, password_command or credential. Keep
      # the password itself out of Nix: the store is readable by everyone.
      password_file = "/etc/subvault/nas.pass";
      init = true;
    };
  };

  plans = {
    system = {
      # Nested subvolumes are fine: each is snapshotted and mounted over its
      # own path in the backup's private mount namespace.
      subvolumes = [ "/" "/home" ];
      repository = "nas";
      schedule = "30 2 * * *"; # every night at 02:30, local time
      catch_up = true; # asleep at 02:30: run on waking up
      keep_snapshots = {
        daily = 3; # local snapshots of the last 3 days, for a quick undo
      };
      backup = {
        exclude = [ "/home/*/.cache" "/home/*/Downloads" "/var/cache" "/var/tmp" "*.iso" ];
        exclude_if_present = [ ".nobackup" "CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55" ];
        one_file_system = true;
        tags = [ "laptop" "system" ];
        extra_args = [ "--exclude-larger-than" "4G" ];
      };
      retention = {
        daily = 7;
        weekly = 4;
        monthly = 12;
        yearly = 2;
      };
      prune_schedule = "@weekly";
      check_schedule = "@monthly";
      check_read_data_subset = "5%";
      hooks = {
        on_failure = [ "/run/current-system/sw/bin/logger" "-t" "subvault" "system backup failed" ];
      };
      # Members of wheel may start this backup and browse its archives
      # (polkit still applies).
      allow_groups = [ "wheel" ];
    };

    postgres = {
      subvolumes = [ "/var/lib/postgresql" ];
      repository = "nas";
      schedule = "@hourly";
      hooks = {
        # A CHECKPOINT just before the snapshot, which takes milliseconds.
        before_snapshot = [ "/run/current-system/sw/bin/systemd-run" "--uid=postgres" "--wait" "--pipe" "--quiet" "--collect" "--" "/run/current-system/sw/bin/psql" "-c" "CHECKPOINT" ];
        on_failure = [
          [ "/run/current-system/sw/bin/logger" "-t" "subvault" "postgres backup failed" ]
        ];
      };
      retention = {
        hourly = 24;
        daily = 14;
        weekly = 8;
        within = "2d";
      };
      prune_schedule = "0 4 * * 0"; # Sundays at 04:00
      check_schedule = ""; # the system plan checks this repository already
      allow_users = [ "alice" ];
    };
  };

  settings = {
    max_concurrent_jobs = 1;
    job_history = 200;
    inhibit_sleep = true;
    state_dir = "/var/lib/subvault";
    cache_dir = "/var/cache/subvault";
    restic = "restic"; # the module puts restic in the daemon's PATH
  };
}
