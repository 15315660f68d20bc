//! Builds the gRPC reflection data for `envoy.service.auth.v3.Authorization` from the descriptor
//! set the `envoy-types` crate ships (`src/generated/types.bin`), keeping only the files the
//! ext_authz service needs. No `protoc`, and no Envoy protos copied into this repository.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

const ROOT: &str = "envoy/service/auth/v3/external_auth.proto";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let dir = envoy_types_dir();
    let bin = dir.join("src/generated/types.bin");
    println!("cargo:rerun-if-changed={}", bin.display());
    let bytes = std::fs::read(&bin).unwrap_or_else(|e| panic!("reading {}: {e}", bin.display()));
    let set = FileDescriptorSet::decode(bytes.as_slice()).expect("envoy-types descriptor set");

    let by_name: HashMap<&str, &FileDescriptorProto> =
        set.file.iter().map(|f| (f.name(), f)).collect();
    let mut needed = BTreeSet::new();
    let mut stack = vec![ROOT];
    while let Some(name) = stack.pop() {
        if !needed.insert(name) {
            continue;
        }
        let file = by_name
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing from the envoy-types descriptor set"));
        stack.extend(file.dependency.iter().map(String::as_str));
    }
    let subset = FileDescriptorSet {
        file: set
            .file
            .iter()
            .filter(|f| needed.contains(f.name()))
            .cloned()
            .collect(),
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("ext_authz_descriptor.bin");
    std::fs::write(out, subset.encode_to_vec()).expect("writing the reflection descriptor set");
}

/// Where cargo unpacked `envoy-types`, asked of `cargo metadata` so vendored and registry
/// sources work alike.
fn envoy_types_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    // Only the packages of the platform being built: others (Windows, WASI) are never
    // downloaded, and `--offline` must not need them.
    let target = std::env::var("TARGET").unwrap_or_default();
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &target])
        .current_dir(&manifest_dir)
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("envoy-types in cargo metadata");
    PathBuf::from(manifest).parent().unwrap().to_path_buf()
}
