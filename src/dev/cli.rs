//! The `sign` command: sign a request as an agent (a Claw proof with its AIT, or with `--httpsig`
//! an RFC 9421 signature), and print its headers, a curl command, or send it to a sidecar's
//! `Check` and print the decision. A developer's tool, not the server's.

use std::process::ExitCode;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

use crate::clock::{Clock, SystemClock};
use crate::config::EXIT_CONFIG;
use crate::dev::check::{check_request, outcome};
use crate::dev::sign::{AgentSigner, Ed25519Signer, random_nonce};

#[derive(clap::Args)]
pub struct SignArgs {
    /// The agent's Ed25519 seed, base64url.
    #[arg(long)]
    seed: String,
    /// The agent's AIT, or @FILE (not with --httpsig).
    #[arg(long, required_unless_present = "httpsig")]
    ait: Option<String>,
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
    /// With --check: the named policy to check against, as an Envoy route would select it.
    #[arg(long)]
    policy: Option<String>,
    /// Sign with HTTP Message Signatures (RFC 9421) instead of a Claw proof: `Signature-Input`,
    /// `Signature`, and `Content-Digest` when there is a body. The keyid is the key's JWK
    /// thumbprint (its JWK is printed on stderr, for `httpsig.keys`).
    #[arg(long)]
    httpsig: bool,
    /// The authority the request goes to (`@authority`), with --httpsig.
    #[arg(long, default_value = "localhost")]
    authority: String,
    /// Covered components, comma-separated (default: @method, @authority, @path, @query when
    /// the path has one, content-digest when there is a body).
    #[arg(long, value_delimiter = ',')]
    components: Vec<String>,
    /// The signature's `tag` (`web-bot-auth` for Web Bot Auth).
    #[arg(long)]
    tag: Option<String>,
    /// A `Signature-Agent` to send and cover (its `;key=` member is the label `sig1`).
    #[arg(long)]
    signature_agent: Option<String>,
    /// Seconds until the signature expires (`expires`); none by default.
    #[arg(long)]
    expires_in: Option<u64>,
}

pub async fn sign(a: SignArgs) -> ExitCode {
    let signer = match Ed25519Signer::from_seed_b64(a.seed.trim()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --seed: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let timestamp = a.timestamp.unwrap_or_else(|| SystemClock.now_secs());
    let nonce = a.nonce.clone().unwrap_or_else(random_nonce);
    let headers = if a.httpsig {
        match message_signature(&a, signer, timestamp, &nonce) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    } else {
        let given = a.ait.as_deref().unwrap_or_default();
        let ait = match given.strip_prefix('@') {
            Some(file) => match std::fs::read_to_string(file) {
                Ok(t) => t.trim().to_owned(),
                Err(e) => {
                    eprintln!("error: --ait: cannot read {file}: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
            None => given.trim().to_owned(),
        };
        let proof = signer.sign_request(&a.method, &a.path, a.body.as_bytes(), timestamp, &nonce);
        let mut headers: Vec<(String, String)> =
            vec![("authorization".into(), format!("Claw {ait}"))];
        headers.extend(
            proof
                .pairs()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        if let Some(t) = &a.access_token {
            headers.push(("x-claw-agent-access".into(), t.clone()));
        }
        headers
    };

    if let Some(addr) = &a.check {
        let mut sent = headers.clone();
        if a.httpsig {
            // The authority Envoy would pass on (`@authority`).
            sent.push(("host".into(), a.authority.clone()));
        }
        let policy = a.policy.as_deref();
        return check(addr, &a.method, &a.path, &sent, a.body.as_bytes(), policy).await;
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

/// The RFC 9421 headers of `--httpsig`.
fn message_signature(
    a: &SignArgs,
    signer: Ed25519Signer,
    created: u64,
    nonce: &str,
) -> Result<Vec<(String, String)>, String> {
    use crate::httpsig::{Request, SignatureSpec};
    use sha2::Digest as _;
    let key = AgentSigner::Ed25519(signer);
    eprintln!("# httpsig.keys entry: {}", key.jwk());
    let mut headers: Vec<(String, String)> = Vec::new();
    if !a.body.is_empty() {
        let digest = sha2::Sha256::digest(a.body.as_bytes());
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest);
        headers.push(("content-digest".into(), format!("sha-256=:{b64}:")));
    }
    let mut components = a.components.clone();
    if components.is_empty() {
        components = ["@method", "@authority", "@path"]
            .map(String::from)
            .to_vec();
        if a.path.contains('?') {
            components.push("@query".into());
        }
        if !a.body.is_empty() {
            components.push("content-digest".into());
        }
    }
    if let Some(agent) = &a.signature_agent {
        headers.push(("signature-agent".into(), format!("sig1=\"{agent}\"")));
        components.push("\"signature-agent\";key=\"sig1\"".into());
    }
    let request = Request {
        method: a.method.clone(),
        scheme: "https".into(),
        authority: a.authority.clone(),
        target: a.path.clone(),
        fields: headers.clone(),
    };
    let created = i64::try_from(created).map_err(|_| "--timestamp is too large")?;
    let spec = SignatureSpec {
        label: "sig1".into(),
        components,
        created,
        expires: a.expires_in.map(|s| created.saturating_add(s as i64)),
        nonce: Some(nonce.to_owned()),
        tag: a.tag.clone(),
        ..SignatureSpec::default()
    };
    let (input, signature) = key
        .sign_message(&request, &spec)
        .map_err(|e| format!("cannot sign: {e}"))?;
    headers.push(("signature-input".into(), input));
    headers.push(("signature".into(), signature));
    Ok(headers)
}

async fn check(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    policy: Option<&str>,
) -> ExitCode {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut request = check_request(method, path, &pairs, body);
    if let (Some(p), Some(a)) = (policy, request.attributes.as_mut()) {
        a.context_extensions.insert("claw_policy".into(), p.into());
    }
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
