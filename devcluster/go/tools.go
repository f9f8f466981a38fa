//go:build tools

package tools

import (
	_ "github.com/determined-ai/determined/agent/cmd/determined-agent"
	_ "github.com/determined-ai/determined/master/cmd/determined-master"
)
