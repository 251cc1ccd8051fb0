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
