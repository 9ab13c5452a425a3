// Command protodescriptors writes a FileDescriptorSet of the Envoy xDS
// transport messages (envoy/service/discovery/v3/discovery.proto and
// everything it imports) taken from the compiled Go packages, so that protoc
// can compile this repository's .proto files against them: no Go module ships
// Envoy's .proto sources. `make generate` runs it.
package main

import (
	"flag"
	"fmt"
	"os"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	// Registers envoy/service/discovery/v3/discovery.proto and its imports.
	_ "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

func main() {
	out := flag.String("out", "", "file to write the descriptor set to")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "protodescriptors: -out is required")
		os.Exit(2)
	}
	if err := run(*out, "envoy/service/discovery/v3/discovery.proto"); err != nil {
		fmt.Fprintln(os.Stderr, "protodescriptors:", err)
		os.Exit(1)
	}
}

func run(out string, roots ...string) error {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		// Dependencies first: protoc needs them in that order.
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	for _, root := range roots {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(root)
		if err != nil {
			return fmt.Errorf("find %s: %w", root, err)
		}
		add(fd)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(set)
	if err != nil {
		return fmt.Errorf("marshal descriptor set: %w", err)
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}
