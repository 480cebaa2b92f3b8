"""Test infrastructure: real registries, the image corpus, and the runtimes' own pulls as oracles."""
