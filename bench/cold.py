"""Measure the CPU one never-seen image costs to judge, in process, and print it.

Run from the repository root: `python -m bench.cold` (what `make bench-cold` does). A local
docker-registry holds `--images` images over 30 repositories (a config and a gzip layer each); the
checker `pullcheck serve` builds judges them one per call for the default node targets, every image
new, and the process's CPU time (user and system, every thread) is divided by the images judged.  No
server, TLS or Flask in the way: what is left is the resolution itself (reference, four registry
requests, documents, caches, rules), the figure the served bench reads in 10 ms ticks.  Rounds are
repeated and the median printed beside the spread; nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.harness.images import make_layer
from tests.harness.registry import start_plain
from webhook.credentials import Keyring
from webhook.deadline import Deadline
from webhook.findings import ImageResult
from webhook.policy import Policy
from webhook.runtimes import default_targets
from webhook.wiring import make_checker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="never-seen images per round (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each with new images (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pullcheck-bench-cold-") as directory:
        registry = start_plain(Path(directory) / "registry")
        try:
            refs = []
            for n in range(args.images * args.rounds + 1):
                repository = f"bench/app{n % 30}"
                registry.push_image(repository, f"v{n}", [make_layer(f"{repository} {n}")])
                refs.append(registry.ref(repository, f"v{n}"))
            policy = Policy.from_mapping(
                {"registries": [{"host": registry.host, "insecure": True, "allowPrivateNetwork": True}]}
            )
            checker = make_checker(policy, network_guard=True)
            targets, keyring = default_targets(), Keyring.empty()
            # One image first: connections open, code paths warm.
            judged: list[ImageResult] = checker.check(refs[:1], targets, policy, keyring, Deadline(10))
            user: list[float] = []
            system: list[float] = []
            wall: list[float] = []
            for round_number in range(args.rounds):
                images = refs[1 + round_number * args.images : 1 + (round_number + 1) * args.images]
                before, started = os.times(), time.perf_counter()
                for image in images:
                    judged += checker.check([image], targets, policy, keyring, Deadline(10))
                after = os.times()
                wall.append((time.perf_counter() - started) / len(images))
                user.append((after.user - before.user) / len(images))
                system.append((after.system - before.system) / len(images))
            checker.close()
        finally:
            registry.stop()

    def row(name: str, values: list[float]) -> str:
        return (
            f"  {name:26} {statistics.median(values) * 1000:6.2f} ms"
            f"   (rounds: {', '.join(f'{v * 1000:.2f}' for v in values)})"
        )

    total = [u + s for u, s in zip(user, system, strict=True)]
    print(
        f"pullcheck cold images in process: {args.rounds} rounds of {args.images} new images, "
        f"{len(targets)} targets, one image per call"
    )
    print(row("CPU per cold image", total))
    print(row("  of which user", user))
    print(row("  of which system", system))
    print(row("wall per cold image", wall))
    with_findings = sum(1 for result in judged if result.findings)
    print(f"  images with findings: {with_findings} (0 expected: every image is a plain OCI image)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
