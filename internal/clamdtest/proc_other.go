//go:build !linux

package clamdtest

import (
	"errors"
	"os"
	"os/exec"
)

func setDeathSignal(*exec.Cmd) {}

var errNoFreeze = errors.New("clamdtest: Pause needs Linux")

func freeze(*os.Process) error { return errNoFreeze }
func thaw(*os.Process) error   { return errNoFreeze }
