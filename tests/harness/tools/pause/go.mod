// The sandbox ("pause") process for the containerd oracles' pod: it only waits to be stopped.
module pullcheck.test/harness/tools/pause

go 1.24.1
