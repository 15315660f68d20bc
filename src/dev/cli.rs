//! The `sign` command: sign a request as an agent, and print its headers, a curl command, or
//! send it to a sidecar's `Check` and print the decision. A developer's tool, not the server's.

use std::process::ExitCode;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

use crate::clock::{Clock, SystemClock};
use crate::config::EXIT_CONFIG;
use crate::dev::check::{check_request, outcome};
use crate::dev::sign::{Ed25519Signer, random_nonce};

#[derive(clap::Args)]
pub struct SignArgs {
    /// The agent's Ed25519 seed, base64url.
    #[arg(long)]
    seed: String,
    /// The agent's AIT, or @FILE.
    #[arg(long)]
    ait: String,
    #[arg(long, default_value = "POST")]
    method: String,
    #[arg(long, default_value = "/")]
    path: String,
    #[arg(long, default_value = "")]
    body: String,
    #[arg(long)]
    access_token: Option<String>,
    /// Unix seconds (default: now).
    #[arg(long)]
    timestamp: Option<u64>,
    #[arg(long)]
    nonce: Option<String>,
    /// Print a curl command for this base URL instead of bare headers.
    #[arg(long)]
    url: Option<String>,
    /// Send the request to this sidecar's gRPC address (host:port) and print the decision.
    #[arg(long)]
    check: Option<String>,
}

pub async fn sign(a: SignArgs) -> ExitCode {
    let signer = match Ed25519Signer::from_seed_b64(a.seed.trim()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --seed: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let ait = match a.ait.strip_prefix('@') {
        Some(file) => match std::fs::read_to_string(file) {
            Ok(t) => t.trim().to_owned(),
            Err(e) => {
                eprintln!("error: --ait: cannot read {file}: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => a.ait.trim().to_owned(),
    };
    let timestamp = a.timestamp.unwrap_or_else(|| SystemClock.now_secs());
    let nonce = a.nonce.unwrap_or_else(random_nonce);
    let proof = signer.sign_request(&a.method, &a.path, a.body.as_bytes(), timestamp, &nonce);
    let mut headers: Vec<(String, String)> = vec![("authorization".into(), format!("Claw {ait}"))];
    headers.extend(
        proof
            .pairs()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    if let Some(t) = &a.access_token {
        headers.push(("x-claw-agent-access".into(), t.clone()));
    }

    if let Some(addr) = a.check {
        return check(&addr, &a.method, &a.path, &headers, a.body.as_bytes()).await;
    }
    match a.url {
        Some(base) => {
            let mut cmd = format!(
                "curl -sS -X {} '{}{}'",
                a.method,
                base.trim_end_matches('/'),
                a.path
            );
            for (k, v) in &headers {
                cmd.push_str(&format!(" \\\n  -H '{k}: {v}'"));
            }
            if !a.body.is_empty() {
                cmd.push_str(&format!(
                    " \\\n  -H 'content-type: application/json' --data-binary '{}'",
                    a.body
                ));
            }
            println!("{cmd}");
        }
        None => {
            for (k, v) in &headers {
                println!("{k}: {v}");
            }
        }
    }
    ExitCode::SUCCESS
}

async fn check(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> ExitCode {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let request = check_request(method, path, &pairs, body);
    let mut client = match AuthorizationClient::connect(format!("http://{addr}")).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot reach {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.check(request).await {
        Ok(r) => {
            let (status, code) = outcome(r.get_ref());
            println!(
                "{} {status} {code}",
                if status == 200 { "allow" } else { "deny" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: Check failed: {e}");
            ExitCode::FAILURE
        }
    }
}
