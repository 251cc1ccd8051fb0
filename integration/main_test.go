package integration

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain tells a developer whose machine lacks the servers that the
// integration tests are skipped, and why. go test shows nothing of a
// passing package unless run with -v, so the notice goes to the terminal,
// when there is one, as well as into each skipped test's log.
func TestMain(m *testing.M) {
	var missing []string
	for _, name := range []string{"danted", "microsocks", "tinyproxy", "gost", "nginx"} {
		if _, err := exec.LookPath(name); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 && !requireMode() {
		if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
			fmt.Fprintf(tty, "integration: tests that need %s skipped (not found in PATH); to run them %s\n",
				strings.Join(missing, ", "), howToRun)
			tty.Close()
		}
	}
	code := m.Run()
	if exposeBuild.dir != "" {
		os.RemoveAll(exposeBuild.dir)
	}
	os.Exit(code)
}
