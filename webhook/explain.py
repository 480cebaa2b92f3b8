"""What each finding code means, per runtime, with the runtime's own error text and how to fix it.

The one source of `pullcheck explain CODE`, the SARIF rules' descriptions and help, and the per-code
section of docs/findings.md (scripts/findings_doc.py writes it; a test fails when it drifts). Every
code of the catalog (webhook.findings.CODES) has an entry here: adding a code means adding its text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from webhook.codes import Code


@dataclass(frozen=True)
class Explanation:
    title: str  # one line: what was found (SARIF shortDescription)
    meaning: str  # why it matters (SARIF fullDescription)
    runtimes: tuple[tuple[str, str], ...]  # (runtime and versions, what that runtime does)
    errors: tuple[str, ...]  # what the runtime says, as `kubectl describe pod` shows it
    fixes: tuple[str, ...]  # what to do, commands included


_PLATFORM_FIXES = (
    "see which platforms the image has: `skopeo inspect --raw docker://IMAGE | jq '.manifests[].platform'`",
    "build and push every platform your nodes run: "
    "`docker buildx build --platform linux/amd64,linux/arm64 -t IMAGE --push .`",
    "or keep the Pod on nodes the image has: `nodeSelector: {kubernetes.io/arch: amd64}`",
)
_REPUSH_OCI = "re-push as OCI with consistent types: `skopeo copy --format oci docker://IMAGE docker://IMAGE`"
_RESOLUTION_SEVERITY = (
    "pullcheck could not judge the image; the policy's `onResolutionError` (allow, warn or deny, default "
    "warn) decides what that means for the Pod."
)

EXPLANATIONS: Mapping[Code, Explanation] = {
    Code.SCHEMA1: Explanation(
        title="Docker V2 Schema 1 manifest",
        meaning="The image is stored in the Docker Image Manifest V2 Schema 1 format (signed or unsigned, or "
        "a schema 1 body under another type), which containerd 2.x and Docker Engine 26 and later no "
        "longer pull. The Pod stays in ImagePullBackOff on those nodes.",
        runtimes=(
            ("containerd 1.6", "pulls and silently converts to OCI (info)"),
            ("containerd 1.7", "pulls and converts, with a deprecation warning (warn)"),
            (
                "containerd 2.0",
                "refuses unless the node sets CONTAINERD_ENABLE_DEPRECATED_PULL_SCHEMA_1_IMAGE=1",
            ),
            ("containerd 2.1 and later", "refuses: schema 1 support is removed (deny)"),
            ("CRI-O", "still pulls schema 1 natively, deprecated (warn)"),
            (
                "Docker Engine 26 and later",
                "refuses unless DOCKER_ENABLE_DEPRECATED_PULL_SCHEMA_1_IMAGE is set",
            ),
            (
                "any containerd, as an index's child",
                "refuses: conversion applies only to a top-level manifest",
            ),
        ),
        errors=(
            "Pulling Schema 1 images have been deprecated and disabled by default since containerd v2.0. "
            "As a workaround you may set an environment variable "
            "CONTAINERD_ENABLE_DEPRECATED_PULL_SCHEMA_1_IMAGE=1",
            "schema 1 image manifests are no longer supported",
            'media type "application/vnd.docker.distribution.manifest.v1+prettyjws" is no longer supported '
            "since containerd v2.1, please rebuild the image",
        ),
        fixes=(
            "convert in place: `skopeo copy --format v2s2 docker://IMAGE docker://IMAGE` "
            "(or `--format oci`), then use the new digest",
            "or rebuild with a current Docker, buildah or kaniko and push again",
            "for an image you do not own, use a newer tag (e.g. `registry.k8s.io/pause:3.10`)",
        ),
    ),
    Code.NO_MATCHING_PLATFORM: Explanation(
        title="No index entry for the node's platform",
        meaning="The image is an index (multi-platform image) with no entry that the runtime selects for the "
        "node's os/architecture, with that runtime's own fallbacks. The pull fails on those nodes.",
        runtimes=(
            (
                "containerd 1.6 to 2.0",
                "falls back amd64 → 386 and arm64 → arm/v8…v5; entries without a platform match last",
            ),
            (
                "containerd 2.1 and later",
                "fetches only exact matches (transfer service, the default), so a 386-only or arm/v7-only "
                "index fails on amd64 or arm64 nodes; with the local pull path it behaves as 2.0",
            ),
            (
                "CRI-O",
                "exact os and architecture; variants must match exactly (nodes report none); an index "
                "nested in an index is refused",
            ),
        ),
        errors=(
            "no match for platform in manifest: not found",
            "get image config descriptor: content digest sha256:…: not found",
            'no image found in manifest list for architecture "arm64", variant "", OS "linux"',
            "Unexpectedly received a manifest list instead of a manifest for a single image",
        ),
        fixes=_PLATFORM_FIXES,
    ),
    Code.PLATFORM_MISMATCH: Explanation(
        title="Single-platform image for another platform",
        meaning="The image is built for one platform only and its config names an os/architecture the node "
        "cannot run. Runtimes pull it; the container then fails to start.",
        runtimes=(
            ("containerd", "pulls; the container fails at start"),
            ("CRI-O", "pulls (only logs the difference); the container fails at start"),
        ),
        errors=("exec /bin/sh: exec format error",),
        fixes=_PLATFORM_FIXES,
    ),
    Code.NOT_AN_IMAGE: Explanation(
        title="An artifact, not a container image",
        meaning="The config media type is not an image config (a Helm chart, a signature, an SBOM, a wasm "
        "module), or the digest names a blob (an image ID used as a digest). No container can run from it. "
        "The config decides: an image config with `artifactType` set runs everywhere.",
        runtimes=(
            ("containerd 1.6", "fails at pull"),
            (
                "containerd 2.1 and later",
                "pulls, then fails when the container is created",
            ),
            (
                "CRI-O",
                "classifies a non-image config as an artifact: the pull succeeds but no container can use "
                "it (an image config is pulled as an image first, whatever its `artifactType`)",
            ),
        ),
        errors=(
            "mismatched image rootfs and manifest layers",
            "no command specified",
            "parsing image configuration: unsupported image-specific operation on artifact with type "
            '"application/vnd.cncf.helm.config.v1+json"',
        ),
        fixes=(
            "check the reference: a `.sig`, `.att` or chart tag is not the image; use the image's own tag or "
            "digest",
            "inspect it: `skopeo inspect --raw docker://IMAGE | jq '.config.mediaType, .artifactType'`",
        ),
    ),
    Code.MIXED_MEDIA_TYPES: Explanation(
        title="OCI and Docker media types mixed in one manifest",
        meaning="An OCI manifest carries a Docker config, or a Docker v2s2 manifest carries OCI layer types. "
        "CRI-O refuses the mix; containerd accepts it.",
        runtimes=(("containerd", "accepts it (info)"), ("CRI-O", "refuses it (deny)")),
        errors=(
            "invalid mixed OCI image with Docker v2s2 config",
            'unsupported docker v2s2 media type: "application/vnd.oci.image.layer.v1.tar+gzip"',
        ),
        fixes=(_REPUSH_OCI, "or rebuild with one tool chain that writes one family of types"),
    ),
    Code.UNSUPPORTED_LAYER: Explanation(
        title="A layer type the runtime cannot apply",
        meaning="A layer's media type is one the runtime has no processor for, or the image has more layers "
        "than the runtime stacks. The pull or the container start fails.",
        runtimes=(
            ("containerd 1.6", "fails on unknown types and on Docker zstd layers at pull"),
            ("containerd 2.1 and later", "pulls, then fails to unpack; applies zstd"),
            (
                "CRI-O",
                "in a Docker v2s2 manifest only gzip, tar and foreign types; in an OCI manifest it sniffs "
                "the compression; up to 500 layers",
            ),
            ("Docker Engine", "at most 125 layers"),
        ),
        errors=(
            "no processor for media-type",
            'unsupported docker v2s2 media type: "application/vnd.docker.image.rootfs.diff.tar.zstd"',
        ),
        fixes=(
            "re-push with gzip layers: `skopeo copy --dest-compress-format gzip docker://IMAGE docker://IMAGE`",
            "too many layers: combine RUN steps, or copy the result of a multi-stage build into one stage",
        ),
    ),
    Code.ENCRYPTED_LAYER: Explanation(
        title="Encrypted layer",
        meaning="A layer is `+encrypted` (ocicrypt). It unpacks only on nodes that hold the decryption keys.",
        runtimes=(
            ("containerd", "needs the imgcrypt stream processor and keys configured on the node"),
            ("CRI-O", "needs `decryption_keys_path` in crio.conf with the keys on the node"),
        ),
        errors=('no processor for media-type "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"',),
        fixes=(
            "give the nodes the keys (containerd imgcrypt, CRI-O `decryption_keys_path`)",
            "or use an image that is not encrypted; then set `severities: {ENCRYPTED_LAYER: allow}` if your "
            "nodes are already configured",
        ),
    ),
    Code.NONDISTRIBUTABLE_LAYER: Explanation(
        title="Foreign (non-distributable) layer",
        meaning="A layer is foreign or non-distributable: the node fetches it from the layer's `urls`, not "
        "from the registry (Windows base layers). Nodes without access to those URLs fail the pull.",
        runtimes=(
            ("containerd", "tries the `urls` first and falls back to the registry after a 404"),
            ("CRI-O", "never falls back once it has tried a URL"),
        ),
        errors=("failed fetching external blob from all urls",),
        fixes=(
            "copy the layers into your registry: `skopeo copy --preserve-digests docker://IMAGE "
            "docker://MIRROR/IMAGE` (crane: `crane copy --allow-nondistributable-artifacts`)",
        ),
    ),
    Code.ROOTFS_MISMATCH: Explanation(
        title="Config diff_ids do not match the layers",
        meaning="The config's `rootfs.diff_ids` do not match the manifest's layers (another count, or the "
        "compressed digests). The image cannot be unpacked.",
        runtimes=(
            ("containerd", "fails to unpack"),
            (
                "CRI-O",
                "accepts an empty list; fails on fewer diff_ids than layers or wrong values (a diff_id "
                "that is the compressed layer's digest fails on every runtime)",
            ),
        ),
        errors=(
            "mismatched image rootfs and manifest layers",
            "wrong diff id calculated on extraction",
            "layer … does not match config's DiffID",
        ),
        fixes=(
            "rebuild the image with a standard builder (docker buildx, buildah, kaniko) and push it again",
        ),
    ),
    Code.MEDIA_TYPE_MISMATCH: Explanation(
        title="Content-Type disagrees with the manifest",
        meaning="The registry serves the manifest with a Content-Type its body does not match, or with a "
        "type the runtime does not pull. Runtimes take the type from the header.",
        runtimes=(
            (
                "containerd",
                "reads an empty or `text/plain` type as schema 1; checks structure when reading children",
            ),
            ("CRI-O", "reads any unknown type as signed schema 1; rejects ambiguous bodies"),
        ),
        errors=(
            "unexpected media type application/octet-stream for sha256:…: not found",
            "media-type: expected manifest but found index",
            'rejecting ambiguous manifest, unexpected fields ["manifests"] in supposedly '
            "application/vnd.oci.image.manifest.v1+json",
        ),
        fixes=(
            "re-push with a client that sets the type: `skopeo copy docker://IMAGE docker://IMAGE`",
            "or fix the registry or proxy in front of it that rewrites Content-Type",
        ),
    ),
    Code.INVALID_DOCUMENT: Explanation(
        title="A manifest, index or config field of the wrong type",
        meaning="A field of the image's manifest, index or config has a type the runtimes' JSON decoders "
        "refuse (a list, number, boolean or object where a string belongs, a descriptor without a digest, "
        "a config that is not JSON), or pullcheck could not judge the documents at all. Only this image "
        "is affected.",
        runtimes=(
            ("containerd", "fails to decode the document and the pull fails"),
            ("CRI-O", "fails to decode the document and the pull fails"),
        ),
        errors=(
            "json: cannot unmarshal array into Go struct field Descriptor.config.mediaType of type string",
            "failed to unmarshal manifest",
        ),
        fixes=(
            "look at the documents: `skopeo inspect --raw docker://IMAGE | jq .` "
            "(and `skopeo inspect --config docker://IMAGE`)",
            "rebuild or re-push with a standard tool (docker buildx, buildah, skopeo copy): a hand-written "
            "or generated manifest is the usual cause",
        ),
    ),
    Code.MANIFEST_TOO_LARGE: Explanation(
        title="Manifest or config over the runtime's size limit",
        meaning="A manifest or config is larger than the runtime reads. The pull fails.",
        runtimes=(
            ("containerd", "4,393,216 bytes for the top-level manifest; no limit on the config"),
            ("CRI-O", "4,194,304 bytes for every manifest and for the config"),
        ),
        errors=("exceeded maximum allowed size", "manifest too big"),
        fixes=(
            "split a huge index into several images, or drop annotations and history from the config "
            "(`docker buildx build --provenance=false …`)",
        ),
    ),
    Code.DIGEST_MISMATCH: Explanation(
        title="Content does not match its digest",
        meaning="The bytes served do not hash to the pinned digest or the one the registry announced. "
        "Runtimes refuse content that fails verification.",
        runtimes=(
            ("containerd", "refuses; also fails on a `Docker-Content-Digest` header that is not a digest"),
            ("CRI-O", "refuses; does not read `Docker-Content-Digest` for a pull by tag"),
        ),
        errors=(
            "digest mismatch",
            "Manifest does not match provided manifest digest",
            "… in header not a valid digest",
        ),
        fixes=(
            "check the pinned digest: `skopeo inspect --format '{{.Digest}}' docker://IMAGE`",
            "if the registry or a proxy changes content, fix it; otherwise push the image again",
        ),
    ),
    Code.SIZE_MISMATCH: Explanation(
        title="A descriptor's size does not match the content",
        meaning="A descriptor's `size` (an index entry, the config or a layer) differs from what the "
        "registry serves. Runtimes that check sizes refuse the content.",
        runtimes=(
            ("containerd", "checks every descriptor: index entries, the config and the layers"),
            ("CRI-O", "checks the config's size only"),
        ),
        errors=("failed size validation", "short read: expected … bytes but got …"),
        fixes=(
            "push the image again from its build (docker buildx, buildah, kaniko): the descriptors are "
            "then written from the content",
        ),
    ),
    Code.NOT_FOUND: Explanation(
        title="Tag or digest not found",
        meaning="The registry has no manifest for this tag or digest.",
        runtimes=(("every runtime", "fails the pull; the Pod stays in ImagePullBackOff"),),
        errors=(
            'failed to resolve reference "IMAGE": IMAGE: not found',
            "manifest unknown",
        ),
        fixes=(
            "list the tags: `skopeo list-tags docker://REPOSITORY`",
            "fix the name, tag or digest in the manifest, or push the image",
        ),
    ),
    Code.MISSING_BLOB: Explanation(
        title="Part of the image is missing from the registry",
        meaning="The config, a layer or the selected child manifest is absent from the registry: the "
        "manifest is there, the content is not (a partial push or garbage collection).",
        runtimes=(("every runtime", "fails the pull when it reaches the missing blob"),),
        errors=("failed to copy: httpReadSeeker: failed open: content at … not found", "blob unknown"),
        fixes=("push the whole image again: `skopeo copy docker://SOURCE docker://IMAGE`",),
    ),
    Code.INVALID_REFERENCE: Explanation(
        title="Not a valid image reference",
        meaning="The image string does not parse as a reference (distribution/reference grammar: lower-case "
        "repository path of at most 255 characters, tag `[\\w][\\w.-]{0,127}`, optional host:port).",
        runtimes=(("every runtime and the kubelet", "refuse it before any pull"),),
        errors=("InvalidImageName", "Failed to apply default image tag: couldn't parse image name"),
        fixes=("fix the image string: `registry.example.com/team/app:1.2.3` or `…@sha256:<64 hex>`",),
    ),
    Code.SHORT_NAME: Explanation(
        title="Unqualified image name",
        meaning="The name has no registry (`nginx`). containerd and the kubelet read it as "
        "`docker.io/library/nginx`; CRI-O resolves it through the node's `registries.conf`, so it can "
        "fail or resolve elsewhere.",
        runtimes=(
            ("containerd", "normalises to docker.io (info)"),
            (
                "CRI-O",
                "resolves through `unqualified-search-registries` and the short-name mode (warn); with the "
                "node's `registries.conf` in the policy (`nodeConfig`), pullcheck resolves it the same way "
                "(info naming the registry chosen, deny when CRI-O would refuse it)",
            ),
        ),
        errors=(
            'short-name "nginx" did not resolve to an alias and no unqualified-search registries are '
            'defined in "/etc/containers/registries.conf"',
        ),
        fixes=("write the full name: `docker.io/library/nginx:1.27`",),
    ),
    Code.UNAUTHORIZED: Explanation(
        title="The registry refused every credential",
        meaning="The registry answered 401 or 403 with every credential pullcheck had: the node's "
        "(`dockerConfig`), the Pod's imagePullSecrets and its ServiceAccount's. " + _RESOLUTION_SEVERITY,
        runtimes=(
            (
                "every runtime",
                "fails the pull unless the node has a credential pullcheck cannot see "
                "(kubelet credential provider)",
            ),
        ),
        errors=(
            "pull access denied, repository does not exist or may require authorization",
            "401 Unauthorized",
        ),
        fixes=(
            "create a pull secret: `kubectl create secret docker-registry regcred --docker-server=HOST "
            "--docker-username=USER --docker-password=…`",
            "and reference it: `imagePullSecrets: [{name: regcred}]` (or on the ServiceAccount)",
        ),
    ),
    Code.REGISTRY_UNREACHABLE: Explanation(
        title="The registry could not be reached",
        meaning="Connection, TLS, timeout or a 5xx answer, or the deadline passed. " + _RESOLUTION_SEVERITY,
        runtimes=(("every runtime", "fails the pull the same way if the node cannot reach it either"),),
        errors=("dial tcp …: connect: connection refused", "x509: certificate signed by unknown authority"),
        fixes=(
            "check the address and the network from the webhook's namespace",
            "a private CA: `registries: [{host: HOST, caFile: /etc/pullcheck/ca.crt}]` in the policy",
        ),
    ),
    Code.RATE_LIMITED: Explanation(
        title="The registry is rate limiting",
        meaning="The registry answered 429 (e.g. Docker Hub's anonymous limit). " + _RESOLUTION_SEVERITY,
        runtimes=(("every runtime", "fails the pull with the same 429 when its node is over the limit"),),
        errors=("toomanyrequests: You have reached your pull rate limit",),
        fixes=(
            "authenticate: node credentials in `dockerConfig` or an imagePullSecret",
            "or mirror the images: `registries: [{host: docker.io, mirror: mirror.internal:5000}]`",
        ),
    ),
    Code.BLOCKED_REGISTRY: Explanation(
        title="The registry is not allowed",
        meaning="The registry address is refused by pullcheck's network guard (loopback, private, "
        "link-local or metadata addresses in the webhook) or by the policy's registry list. "
        + _RESOLUTION_SEVERITY
        + " When the node's own `registries.conf` (the policy's `nodeConfig`) blocks the registry, the "
        'finding says "blocked by the node\'s registries.conf" and is a deny on CRI-O targets.',
        runtimes=(
            ("every runtime", "is not affected by the network guard: this is pullcheck's own rule"),
            ("CRI-O", "refuses every image of a registry its `registries.conf` marks `blocked = true`"),
        ),
        errors=(
            "registry 127.0.0.1:5000 is blocked in /etc/containers/registries.conf or "
            "/etc/containers/registries.conf.d",
        ),
        fixes=(
            "allow the registry: `registries: [{host: HOST, allowPrivateNetwork: true}]` in the policy",
            "or use a registry the nodes allow (see docs/mirrors.md)",
        ),
    ),
    Code.DIGEST_DRIFT: Explanation(
        title="Running Pods use another digest than the tag names now",
        meaning="`pullcheck audit` and the background audit only: the workload's running Pods report (in "
        "`imageID`) another digest than the one its tag names now, so a rescheduled or scaled Pod pulls "
        "other content, which no one has judged running yet. Info by default.",
        runtimes=(("every runtime", "pulls what the tag names when a new Pod lands on a node without it"),),
        errors=(),
        fixes=(
            "roll the workload out to run what the tag names now: `kubectl rollout restart deployment/NAME`",
            "or pin images to digests (`pinDigests` in the policy, or `pullcheck check -f FILE --pin`)",
            "count it: `severities: {DIGEST_DRIFT: warn}`",
        ),
    ),
}


def to_text(code: Code) -> str:
    """`pullcheck explain CODE`: plain text for a terminal."""
    entry = EXPLANATIONS[code]
    lines = [f"{code}: {entry.title}", "", entry.meaning, "", "By runtime:"]
    lines += [f"  {runtime}: {what}" for runtime, what in entry.runtimes]
    if entry.errors:
        lines += ["", "What the runtime says (kubectl describe pod):"]
        lines += [f"  {error}" for error in entry.errors]
    lines += ["", "Fix:"]
    lines += [f"  - {fix}" for fix in entry.fixes]
    return "\n".join(lines)


def to_markdown(code: Code, heading: str = "###") -> str:
    """The same in Markdown: SARIF rule help and docs/findings.md."""
    entry = EXPLANATIONS[code]
    lines = [f"{heading} `{code}`: {entry.title}", "", entry.meaning, ""]
    lines += [f"- **{runtime}**: {what}" for runtime, what in entry.runtimes]
    if entry.errors:
        lines += ["", "What the runtime says (`kubectl describe pod`):", ""]
        lines += [f"- `{error}`" for error in entry.errors]
    lines += ["", "Fix:", ""]
    lines += [f"- {fix}" for fix in entry.fixes]
    return "\n".join(lines)


DOC_BEGIN = "<!-- BEGIN explain: written by scripts/findings_doc.py from webhook/explain.py; do not edit -->"
DOC_END = "<!-- END explain -->"


def findings_doc_section() -> str:
    """The per-code section of docs/findings.md, between its markers."""
    body = "\n\n".join(to_markdown(code) for code in EXPLANATIONS)
    return f"{DOC_BEGIN}\n\n{body}\n\n{DOC_END}"
