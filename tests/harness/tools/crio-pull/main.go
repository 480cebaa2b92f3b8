// crio-pull pulls one image the way CRI-O 1.33's PullImage does, so the tests can use it as an oracle:
// containers/image copies the image into a containers/storage store (vfs here); when that fails, CRI-O
// asks whether the reference is an OCI artifact and, if so, pulls it into its artifact store instead
// (internal/storage/image.go pullImageImplementation, internal/ociartifact PullManifest). An artifact
// pull succeeds at the CRI level, but no container can be created from it.
//
//	crio-pull -root DIR [-os linux -arch amd64 -variant ""] REF
//
// prints one JSON object: {"outcome": "image"|"artifact"|"failed", "message": "…"}; the message of an
// artifact is why the image pull failed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containers/image/v5/copy"
	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/manifest"
	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/signature"
	istorage "github.com/containers/image/v5/storage"
	"github.com/containers/image/v5/types"
	"github.com/containers/storage"
	"github.com/containers/storage/pkg/reexec"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// errIsAnImage is CRI-O's ociartifact.ErrIsAnImage: the reference is an image, so the image error stands.
var errIsAnImage = errors.New("provided artifact is a container image")

type result struct {
	Outcome string `json:"outcome"`
	Message string `json:"message"`
}

func main() {
	// containers/storage applies layers in a re-executed copy of this program (chrootarchive).
	if reexec.Init() {
		return
	}
	root := flag.String("root", "", "directory for the containers/storage store and the artifact store")
	osChoice := flag.String("os", "", "node OS (default: this host's)")
	archChoice := flag.String("arch", "", "node architecture (default: this host's)")
	variantChoice := flag.String("variant", "", "node architecture variant (default: none, as a node reports)")
	flag.Parse()
	if *root == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: crio-pull -root DIR [-os OS -arch ARCH -variant VARIANT] REFERENCE")
		os.Exit(2)
	}
	named, err := reference.ParseNormalizedNamed(flag.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "crio-pull: %v\n", err)
		os.Exit(2)
	}
	sys := &types.SystemContext{
		OSChoice:           *osChoice,
		ArchitectureChoice: *archChoice,
		VariantChoice:      *variantChoice,
		// The test registry is plain http on loopback: CRI-O's insecure_registries does this.
		DockerInsecureSkipTLSVerify: types.OptionalBoolTrue,
		// No mirrors, search registries or host settings from the machine running the tests.
		SystemRegistriesConfPath:    filepath.Join(*root, "registries.conf"),
		SystemRegistriesConfDirPath: filepath.Join(*root, "registries.conf.d"),
		SignaturePolicyPath:         filepath.Join(*root, "policy.json"),
	}
	if err := os.WriteFile(sys.SystemRegistriesConfPath, nil, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "crio-pull: %v\n", err)
		os.Exit(2)
	}
	outcome := pull(context.Background(), *root, named, sys)
	if err := json.NewEncoder(os.Stdout).Encode(outcome); err != nil {
		os.Exit(1)
	}
}

func pull(ctx context.Context, root string, named reference.Named, sys *types.SystemContext) result {
	srcRef, err := docker.NewReference(named)
	if err != nil {
		return result{"failed", err.Error()}
	}
	imageErr := pullImage(ctx, root, named, srcRef, sys)
	if imageErr == nil {
		return result{"image", "pulled"}
	}
	if artifactErr := pullArtifact(ctx, root, srcRef, sys); artifactErr != nil {
		return result{"failed", fmt.Sprintf(
			"unable to pull image or OCI artifact: pull image err: %v; artifact err: %v", imageErr, artifactErr)}
	}
	return result{"artifact", imageErr.Error()}
}

func acceptAnything() (*signature.PolicyContext, error) {
	return signature.NewPolicyContext(&signature.Policy{
		Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()},
	})
}

// pullImage is containers/image's copy into containers/storage, as CRI-O's pull does.
func pullImage(ctx context.Context, root string, named reference.Named, srcRef types.ImageReference, sys *types.SystemContext) error {
	store, err := storage.GetStore(storage.StoreOptions{
		GraphRoot:       filepath.Join(root, "storage"),
		RunRoot:         filepath.Join(root, "run"),
		GraphDriverName: "vfs",
	})
	if err != nil {
		return err
	}
	defer store.Shutdown(true) //nolint:errcheck // the store is thrown away after one pull
	destRef, err := istorage.Transport.NewStoreReference(store, named, "")
	if err != nil {
		return err
	}
	policy, err := acceptAnything()
	if err != nil {
		return err
	}
	defer policy.Destroy() //nolint:errcheck
	_, err = copy.Image(ctx, policy, destRef, srcRef, &copy.Options{SourceCtx: sys})
	return err
}

// pullArtifact follows CRI-O 1.33's ociartifact.Store.PullManifest: decide from the manifest and its
// config media type whether the reference is an artifact, and if so copy it into an OCI layout.
func pullArtifact(ctx context.Context, root string, ref types.ImageReference, sys *types.SystemContext) error {
	manifestBytes, mimeType, err := getManifest(ctx, ref, sys)
	if err != nil {
		return fmt.Errorf("get manifest: %w", err)
	}
	if mimeType == manifest.DockerV2ListMediaType {
		return errIsAnImage
	}
	if mimeType == imgspecv1.MediaTypeImageIndex {
		list, err := manifest.ListFromBlob(manifestBytes, mimeType)
		if err != nil {
			return fmt.Errorf("parse manifest from blob: %w", err)
		}
		instance, err := list.ChooseInstance(sys)
		if err != nil {
			return fmt.Errorf("choose instance: %w", err)
		}
		pinned, err := reference.WithDigest(reference.TrimNamed(ref.DockerReference()), instance)
		if err != nil {
			return fmt.Errorf("failed to get image reference: %w", err)
		}
		if ref, err = docker.NewReference(pinned); err != nil {
			return fmt.Errorf("failed to get image reference: %w", err)
		}
		if manifestBytes, mimeType, err = getManifest(ctx, ref, sys); err != nil {
			return fmt.Errorf("get manifest: %w", err)
		}
	}
	parsed, err := manifest.FromBlob(manifestBytes, mimeType)
	if err != nil {
		return fmt.Errorf("parse manifest from blob: %w", err)
	}
	configType := parsed.ConfigInfo().MediaType
	imageTypes := []string{imgspecv1.MediaTypeImageManifest, manifest.DockerV2Schema2MediaType, manifest.DockerV2Schema1SignedMediaType}
	configTypes := []string{"", imgspecv1.MediaTypeImageConfig, manifest.DockerV2Schema2ConfigMediaType}
	if slices.Contains(imageTypes, mimeType) && slices.Contains(configTypes, configType) {
		oci, err := manifest.OCI1FromManifest(manifestBytes)
		if err != nil || oci.ArtifactType == "" {
			return errIsAnImage
		}
	}
	dest, err := layout.NewReference(filepath.Join(root, "artifacts"), ref.DockerReference().String())
	if err != nil {
		return fmt.Errorf("create destination reference: %w", err)
	}
	policy, err := acceptAnything()
	if err != nil {
		return err
	}
	defer policy.Destroy() //nolint:errcheck
	if _, err := copy.Image(ctx, policy, dest, ref, &copy.Options{SourceCtx: sys, RemoveSignatures: true}); err != nil {
		return fmt.Errorf("copy artifact: %w", err)
	}
	return nil
}

func getManifest(ctx context.Context, ref types.ImageReference, sys *types.SystemContext) ([]byte, string, error) {
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return nil, "", fmt.Errorf("build image source: %w", err)
	}
	defer src.Close()
	return src.GetManifest(ctx, nil)
}
