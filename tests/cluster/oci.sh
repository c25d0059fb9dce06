# Writes an OCI image archive without any daemon. Sourced, not run.
#
# oci_archive ROOTFS OUT NAME CONFIG: one gzip layer holding ROOTFS (owners
# and modes as they are on disk, timestamps zeroed so the same input gives
# the same digests), CONFIG as the image's `config` object (User,
# Entrypoint, Cmd, Env, Labels, ...). OUT is an OCI image layout tar with
# NAME in the index annotations `ctr images import`, skopeo and crane read.

oci_blob() { # FILE DIR -> moves FILE to DIR/blobs/sha256/<digest>, prints the digest
  local digest
  digest=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$2/blobs/sha256/$digest"
  echo "$digest"
}

oci_archive() {
  local rootfs=$1 out=$2 name=$3 config=$4 work layer_tar diff_id layer layer_size cfg cfg_size manifest manifest_size
  work=$(mktemp -d)
  mkdir -p "$work/layout/blobs/sha256"
  layer_tar=$work/layer.tar
  tar --create --file "$layer_tar" --directory "$rootfs" --sort=name --numeric-owner \
    --mtime=@0 --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
  diff_id=$(sha256sum "$layer_tar" | cut -d' ' -f1)
  gzip -n -6 "$layer_tar"
  layer_size=$(stat -c %s "$layer_tar.gz")
  layer=$(oci_blob "$layer_tar.gz" "$work/layout")

  jq -n --argjson config "$config" --arg diff "sha256:$diff_id" '{
    created: "1970-01-01T00:00:00Z", architecture: "amd64", os: "linux",
    config: $config,
    rootfs: {type: "layers", diff_ids: [$diff]},
    history: [{created: "1970-01-01T00:00:00Z", created_by: "tests/cluster/oci.sh"}]
  }' >"$work/config.json"
  cfg_size=$(stat -c %s "$work/config.json")
  cfg=$(oci_blob "$work/config.json" "$work/layout")

  jq -n --arg cfg "sha256:$cfg" --argjson cfg_size "$cfg_size" --arg layer "sha256:$layer" \
    --argjson layer_size "$layer_size" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cfg, size: $cfg_size},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $layer, size: $layer_size}]
  }' >"$work/manifest.json"
  manifest_size=$(stat -c %s "$work/manifest.json")
  manifest=$(oci_blob "$work/manifest.json" "$work/layout")

  jq -n --arg m "sha256:$manifest" --argjson size "$manifest_size" --arg name "$name" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $size,
      platform: {architecture: "amd64", os: "linux"},
      annotations: {"io.containerd.image.name": $name, "org.opencontainers.image.ref.name": ($name | sub(".*:"; ""))}}]
  }' >"$work/layout/index.json"
  printf '{"imageLayoutVersion": "1.0.0"}' >"$work/layout/oci-layout"
  # Entries without a "./" prefix: syft refuses an archive whose entries start with it.
  tar --create --file "$out" --directory "$work/layout" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    blobs index.json oci-layout
  rm -rf "$work"
}
