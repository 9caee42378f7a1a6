package api

import (
	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
)

// GetJobFiles names the files job id works on now, as restic reports them
// (empty unless it runs). File names are for those who may see any file
// of the plan: the restore authorization on the job's plan (root, or
// polkit's admin), as for Diff. The job's CurrentFiles property, which
// every user on the bus may read and PropertiesChanged carries to all, is
// always empty.
func (m manager) GetJobFiles(msg dbus.Message, sender dbus.Sender, id uint32) ([]string, *dbus.Error) {
	if err := checkSignature(msg, "u"); err != nil {
		return nil, err
	}
	j, ok := m.s.d.Queue().Job(id)
	if !ok {
		return nil, newError(contract.ErrorNoSuchJob, "there is no job %d; ListJobs lists the jobs", id)
	}
	if _, derr := m.s.authorize(msg, sender, contract.ActionRestore, m.s.planConfig(j.Plan)); derr != nil {
		return nil, derr
	}
	return contract.EscapeAll(j.CurrentFiles), nil
}
