package btrfs

// SetDeviceDirs points the device lookups at other directories for one
// test: sysfs's block devices, the device nodes and udev's database ("" keeps
// one as it is). It returns the function that restores them.
func SetDeviceDirs(sys, dev, udev string) (restore func()) {
	oldSys, oldDev, oldUdev := sysBlockDir, devDir, udevDataDir
	if sys != "" {
		sysBlockDir = sys
	}
	if dev != "" {
		devDir = dev
	}
	if udev != "" {
		udevDataDir = udev
	}
	return func() { sysBlockDir, devDir, udevDataDir = oldSys, oldDev, oldUdev }
}
