// Package contract is subvault's D-Bus interface (docs/dbus-api.md) spelled
// in Go: the bus name, object paths, interface, property and error names,
// the polkit action ids, job kinds, states and results and kinds of change
// as the wire spells them, the rows the list methods answer, the
// properties of the manager, plan and job objects, and the records DiffTo
// writes.
//
// The daemon's D-Bus skin (api) and its client (api/client) both import it,
// so each name and each wire type is defined once. It imports nothing of
// subvault, so a client built on it pulls in nothing of the daemon;
// make lint checks that (golangci-lint's depguard and go list -deps).
package contract
