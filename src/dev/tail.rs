//! `claw-authz events tail`: security events as they arrive, from a running server's admin
//! listener (`GET /v1/security/events`), one line each for an operator at a terminal, or the
//! CloudEvents themselves with `--json`.

use std::io::Write as _;

use serde_json::Value;

/// Follows the events of the server at `admin` (`http://host:port`); stops after `count`
/// events when given. Returns a process exit code.
pub async fn tail(admin: &str, token: Option<&str>, json: bool, count: Option<usize>) -> u8 {
    let url = format!("{}/v1/security/events", admin.trim_end_matches('/'));
    let mut request = reqwest::Client::new().get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut answer = match request.send().await {
        Ok(a) if a.status().is_success() => a,
        Ok(a) => {
            eprintln!("error: {url} answered {}", a.status());
            return 1;
        }
        Err(e) => {
            eprintln!("error: cannot reach {url}: {e}");
            return 1;
        }
    };
    let (mut buffer, mut seen) = (Vec::new(), 0usize);
    let mut out = std::io::stdout().lock();
    loop {
        let chunk = match answer.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("error: the event stream ended: {e}");
                return 1;
            }
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]);
            let shown = match json {
                true => text.into_owned(),
                false => summary(&text),
            };
            if writeln!(out, "{shown}").and_then(|()| out.flush()).is_err() {
                return 0;
            }
            seen += 1;
            if count.is_some_and(|n| seen >= n) {
                return 0;
            }
        }
    }
}

/// `time  type  agent  client  count/window  risk  (other data)`.
fn summary(event: &str) -> String {
    let Ok(e) = serde_json::from_str::<Value>(event) else {
        return event.to_owned();
    };
    let data = &e["data"];
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let kind = text(&e["type"]);
    let mut extra: Vec<String> = data
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "agent" | "client" | "count" | "windowSecs" | "risk"
            )
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    extra.sort();
    format!(
        "{}  {}  agent={}  client={}  count={}/{}s  risk={}  {}",
        text(&e["time"]),
        kind.strip_prefix("claw.security.").unwrap_or(&kind),
        text(&data["agent"]),
        text(&data["client"]),
        data["count"],
        data["windowSecs"],
        data["risk"],
        extra.join(" ")
    )
    .trim_end()
    .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_event_is_one_readable_line() {
        let event = r#"{"specversion":"1.0","id":"x","source":"claw-authz","type":"claw.security.replay_detected","time":"2026-01-01T00:00:00.000Z","data":{"agent":"did:a","client":"192.0.2.1","count":2,"windowSecs":300,"risk":80,"codes":["PROXY_AUTH_REPLAY"]}}"#;
        assert_eq!(
            super::summary(event),
            r#"2026-01-01T00:00:00.000Z  replay_detected  agent=did:a  client=192.0.2.1  count=2/300s  risk=80  codes=["PROXY_AUTH_REPLAY"]"#
        );
    }
}
