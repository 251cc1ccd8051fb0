package socksbind_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReadmeSnippet keeps the README's first Go snippet identical to the
// lines of Example, which runs as a test.
func TestReadmeSnippet(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, after, ok := strings.Cut(string(readme), "```go\n")
	require.True(t, ok, "README has no Go snippet")
	snippet, _, _ := strings.Cut(after, "```")

	src, err := os.ReadFile("example_test.go")
	require.NoError(t, err)
	_, body, ok := strings.Cut(string(src), "\nfunc Example() {\n")
	require.True(t, ok, "example_test.go has no Example")
	body, _, _ = strings.Cut(body, "\n}\n")
	lines := strings.Split(body, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "\t")
	}
	assert.True(t, strings.HasPrefix(strings.Join(lines, "\n"), snippet),
		"the README snippet is not the beginning of Example:\n%s", snippet)
}

// TestReadmeUDPSnippets keeps each line of the README's UDP snippets a line
// of example_udp_test.go, whose examples run as tests.
func TestReadmeUDPSnippets(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## UDP through the proxy\n")
	require.True(t, ok, "README has no UDP section")
	section, _, _ = strings.Cut(section, "\n## ")
	src, err := os.ReadFile("example_udp_test.go")
	require.NoError(t, err)
	have := map[string]bool{}
	for _, l := range strings.Split(string(src), "\n") {
		have[strings.TrimSpace(l)] = true
	}
	snippets := 0
	for rest := section; ; snippets++ {
		var snippet string
		if _, rest, ok = strings.Cut(rest, "```go\n"); !ok {
			break
		}
		snippet, rest, _ = strings.Cut(rest, "```")
		for _, l := range strings.Split(snippet, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				assert.True(t, have[l], "README line %q is not in example_udp_test.go", l)
			}
		}
	}
	assert.Equal(t, 2, snippets)
}
