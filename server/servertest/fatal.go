package servertest

import (
	"fmt"
	"testing"
)

// CatchFatal runs fn with a testing.TB whose Fatal and Fatalf end fn
// instead of the test, and returns their message ("" when fn returned):
// for the tests of test helpers, which must fail with the right words.
// Other methods are t's. Call it from the test goroutine.
func CatchFatal(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fatalTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(fatalPanic); !ok {
					panic(r)
				}
			}
		}()
		fn(f)
	}()
	return f.msg
}

type fatalTB struct {
	testing.TB
	msg string
}

type fatalPanic struct{}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	panic(fatalPanic{})
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fatalPanic{})
}
