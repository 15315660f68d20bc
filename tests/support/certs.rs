//! Test certificates made with Debian's `openssl`: a CA, a server certificate and client
//! certificates whose URI names are SPIFFE IDs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const ENVOY_ID: &str = "spiffe://test.local/ns/gateway/sa/envoy";
pub const OTHER_ID: &str = "spiffe://test.local/ns/apps/sa/other";
/// The server certificate's names: `claw-authz` is the name `envoy/sidecar-mtls.yaml` expects.
pub const SERVER_NAMES: &str = "DNS:localhost,DNS:claw-authz,IP:127.0.0.1";

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("Debian's openssl (installed by .ci/setup)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key and a certificate `name.crt` signed by the CA in `dir`, for `usage` with `san`.
pub fn issue(dir: &Path, name: &str, san: &str, usage: &str) {
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\n\
             subjectAltName={san}\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &crt,
            "-extfile",
            &ext,
        ],
    );
}

/// A CA, the server's certificate, and two clients', in a fresh directory.
pub fn certificates(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("claw-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=claw-test-ca",
        ],
    );
    issue(&dir, "server", SERVER_NAMES, "serverAuth");
    issue(&dir, "envoy", &format!("URI:{ENVOY_ID}"), "clientAuth");
    issue(&dir, "other", &format!("URI:{OTHER_ID}"), "clientAuth");
    dir
}
