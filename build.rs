//! Builds the gRPC reflection data for `envoy.service.auth.v3.Authorization` from the descriptor
//! set the `envoy-types` crate ships (`src/generated/types.bin`), keeping only the files the
//! ext_authz service needs. No `protoc`, and no Envoy protos copied into this repository.
//!
//! Finding that crate's source must work on a cold machine: `cargo metadata` would resolve (and,
//! with `--offline`, require) every package of the lock file, dev-dependencies and other
//! platforms included, while a build only downloads its own graph. So the source directory is
//! found where cargo unpacked it for this build (`$CARGO_HOME/registry/src/*/envoy-types-VER`,
//! the version read from `Cargo.lock`), and only a vendored or otherwise replaced source falls
//! back to asking `cargo metadata`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

const ROOT: &str = "envoy/service/auth/v3/external_auth.proto";
const CRATE: &str = "envoy-types";
const DESCRIPTORS: &str = "src/generated/types.bin";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let dir = envoy_types_dir();
    let bin = dir.join(DESCRIPTORS);
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

/// The unpacked source of the locked `envoy-types`: the registry cache first, `cargo metadata`
/// only when that finds nothing (vendored sources, where every package is present anyway).
fn envoy_types_dir() -> PathBuf {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    if let Some(version) = locked_version(&manifest_dir.join("Cargo.lock"))
        && let Some(dir) = registry_source(&version)
    {
        return dir;
    }
    metadata_source(&manifest_dir)
}

/// The version of `envoy-types` that `Cargo.lock` pins.
fn locked_version(lock: &Path) -> Option<String> {
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{CRATE}\"") {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_owned());
        }
    }
    None
}

/// `$CARGO_HOME/registry/src/<index>/envoy-types-<version>` holding the descriptor set, fully
/// unpacked (cargo writes `.cargo-ok` last).
fn registry_source(version: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let src = home.join("registry/src");
    println!("cargo:rerun-if-env-changed=CARGO_HOME");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&src)
        .ok()?
        .filter_map(Result::ok)
        .map(|index| index.path().join(format!("{CRATE}-{version}")))
        .filter(|dir| dir.join(".cargo-ok").is_file() && dir.join(DESCRIPTORS).is_file())
        .collect();
    found.sort();
    found.pop()
}

/// Where `cargo metadata` says the package lives (vendored or path sources).
fn metadata_source(manifest_dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = std::env::var("TARGET").unwrap_or_default();
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &target])
        .current_dir(manifest_dir)
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "{CRATE} is not in the cargo registry cache and cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == CRATE)
        .and_then(|p| p["manifest_path"].as_str())
        .unwrap_or_else(|| panic!("{CRATE} in cargo metadata"));
    PathBuf::from(manifest).parent().unwrap().to_path_buf()
}
