"""`make bench`: the webhook as it ships against a local registry, beside a do-nothing floor."""
