// Package api is the godbus adapter over package daemon: the manager, plan
// and job objects of org.subvault.Subvault1, their introspection, properties,
// signals and ObjectManager, the error names, and the caller's authorization
// (bus credentials, the plan's allow lists, polkit). It holds no backup logic
// and imports neither btrfs nor restic (checked by depguard);
// docs/architecture.md says how a call travels through it.
package api
