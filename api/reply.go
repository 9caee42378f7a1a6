package api

import (
	"fmt"
	"reflect"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
)

// MaxReplyBytes bounds the body of every reply whose size callers or the
// files on disk decide. dbus-daemon disconnects a connection that sends a
// message over its max_message_size (32 MiB on the system bus), and the
// daemon would be off the bus for good; 8 MiB leaves room for the header
// and for the bus's queues, and is far more than any list but a Diff of a
// big tree needs. A result that may be bigger goes through a file
// descriptor the caller passes (DiffTo).
const MaxReplyBytes = 8 << 20

var variantType = reflect.TypeFor[dbus.Variant]()

// wireSize is an upper bound of the bytes v takes in a message body: each
// value with the most alignment padding it could need.
func wireSize(v reflect.Value) int {
	if v.Type() == variantType {
		variant, _ := v.Interface().(dbus.Variant)
		return 1 + len(variant.Signature().String()) + 1 + 7 + wireSize(reflect.ValueOf(variant.Value()))
	}
	switch v.Kind() {
	case reflect.String:
		return 4 + v.Len() + 1 + 3
	case reflect.Uint8:
		return 1
	case reflect.Bool, reflect.Int16, reflect.Uint16, reflect.Int32, reflect.Uint32:
		return 4 + 3
	case reflect.Int64, reflect.Uint64, reflect.Float64:
		return 8 + 7
	case reflect.Slice, reflect.Array:
		n := 4 + 7
		for i := range v.Len() {
			n += wireSize(v.Index(i))
		}
		return n
	case reflect.Map:
		n := 4 + 7
		for it := v.MapRange(); it.Next(); {
			n += 7 + wireSize(it.Key()) + wireSize(it.Value())
		}
		return n
	case reflect.Struct:
		n := 7
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				n += wireSize(v.Field(i))
			}
		}
		return n
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return 0
		}
		return wireSize(v.Elem())
	}
	return 16
}

// checkReplySize refuses a reply over MaxReplyBytes, rather than have the
// bus drop the daemon for it: what names the list (e.g. "plan home has
// 90000 archives") and fix, what to do instead.
func checkReplySize(reply any, what, fix string) *dbus.Error {
	if size := wireSize(reflect.ValueOf(reply)); size > MaxReplyBytes {
		return newError(contract.ErrorFailed, "%s, %s in one reply, over the %d MiB a reply may carry; %s",
			what, mebibytes(size), MaxReplyBytes>>20, fix)
	}
	return nil
}

func mebibytes(n int) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
