#!/usr/bin/env bash
# Builds the Kubernetes control-plane programs the Kubernetes tests run for
# real (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl),
# from the Go module k8s.io/kubernetes, into a cache outside git, and installs
# Debian's etcd. Prints the directory holding the binaries. Does nothing
# when they are there already: the first build takes ~30 minutes on 2 cores
# beside the other tests of make test.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-1.37.2}
. "$(dirname "$0")/tool-cache.sh"
DIR=$CACHE/kubernetes-v$K8S_VERSION
PROGRAMS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

lock_cache

# KUMA_TOOLS_NO_APT=1 (the early background build): the Go programs only;
# etcd comes from Debian when a test run asks for the folder.
if [ -z "${KUMA_TOOLS_NO_APT:-}" ] && ! command -v etcd >/dev/null; then
  echo "installing etcd-server (Debian)" >&2
  if [ "$(id -u)" != 0 ]; then echo "need root to apt-get install etcd-server" >&2; exit 1; fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 etcd-server >/dev/null
fi

missing=()
for p in "${PROGRAMS[@]}"; do [ -x "$DIR/$p" ] || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "building ${missing[*]} v$K8S_VERSION into $DIR (once per machine, ~30 min cold)" >&2
  mkdir -p "$DIR"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  go mod init kuma-metrics/k8s-tools >/dev/null 2>&1
  go mod edit -require=k8s.io/kubernetes@v$K8S_VERSION
  # k8s.io/kubernetes names its staging modules at v0.0.0: pin each to the
  # release of the same minor version.
  staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
    cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
    cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
    kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
    mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming)
  for m in "${staging[@]}"; do go mod edit "-replace=k8s.io/$m=k8s.io/$m@v0.${K8S_VERSION#1.}"; done
  minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  # One go build for all: the programs link side by side (half the wall
  # time of building them one after the other, once their packages are
  # compiled); each is moved into place whole. No DWARF compiled (-w drops
  # it anyway): 10-18% less compile CPU.
  pkgs=()
  for p in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$p"); done
  rm -rf "$DIR/.new" && mkdir -p "$DIR/.new"
  GOFLAGS=-mod=mod nice -n "${KUMA_TOOLS_NICE:-0}" go build -trimpath -gcflags=all=-dwarf=false -ldflags "$ldflags" -o "$DIR/.new/" "${pkgs[@]}" >&2
  for p in "${missing[@]}"; do mv "$DIR/.new/$p" "$DIR/$p"; done
  rmdir "$DIR/.new"
fi
# envtest's layout (KUBEBUILDER_ASSETS): kube-apiserver, etcd and kubectl in one folder.
if command -v etcd >/dev/null; then ln -sf "$(command -v etcd)" "$DIR/etcd"; fi
echo "$DIR"
