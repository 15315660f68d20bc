//! Refreshing the CRL: when it is due, with jitter, off the request path; fetching it and
//! verifying it on a blocking thread.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;

impl CrlCache {
    /// Refreshes whenever due until the cache is dropped: on time (plus up to 10 % jitter, so
    /// replicas do not poll in step), and every few seconds while the list is stale.
    pub(crate) fn run_refresher(self: &Arc<Self>, keys: Arc<KeyCache>) {
        let weak = Arc::downgrade(self);
        let changed = self.push_changed.clone();
        tokio::spawn(async move {
            loop {
                let Some(crl) = weak.upgrade() else { return };
                crl.refresh_if_due(&keys).await;
                let delay = crl.next_delay_ms();
                drop(crl);
                let sleep = tokio::time::sleep(std::time::Duration::from_millis(delay));
                tokio::select! {
                    () = sleep => {}
                    () = changed.notified() => {}
                }
            }
        });
    }

    fn next_delay_ms(&self) -> u64 {
        let now = self.clock.now_ms();
        let state = self.state.load();
        if self.is_stale(&state, now) {
            return STALE_RETRY_MS;
        }
        let interval = self.interval_ms();
        let jitter = uuid::Uuid::new_v4().as_u128() as u64 % (interval / 10 + 1);
        let since = state.last_success_ms.map_or(0, |t| now.saturating_sub(t));
        interval.saturating_sub(since).max(1_000) + jitter
    }

    fn refresh_wanted(&self, now: u64) -> bool {
        let state = self.state.load();
        let stale = self.is_stale(&state, now);
        let interval = self.interval_ms();
        let due = stale
            || state
                .last_success_ms
                .is_some_and(|t| now.saturating_sub(t) >= interval);
        due && (stale
            || state
                .last_attempt_ms
                .is_none_or(|t| now.saturating_sub(t) >= interval))
    }

    /// Fetches and verifies the list if it is due (see the module docs); the refresher calls
    /// this, and so does anything that drives time by hand (the conformance runner, the demo).
    pub async fn refresh_if_due(&self, keys: &Arc<KeyCache>) {
        let _one = self.refreshing.lock().await;
        let now = self.clock.now_ms();
        if !self.refresh_wanted(now) {
            return; // another check refreshed while this one waited
        }
        self.update(|s| s.last_attempt_ms = Some(now));
        let fetched = self.fetch(keys).await.and_then(|list| {
            let held = self.state.load();
            // An unsigned "no revocations" never withdraws signed ones (`docs/deviations.md`
            // item 3): it is a failed refresh, under the stale policy.
            if list.is_none() && held.issued_at.is_some() && !held.revoked.is_empty() {
                return Err("a 404 after a signed CRL with revocations was ignored".to_owned());
            }
            let (revoked, issued_at) = list.unwrap_or_default();
            let held = held.issued_at;
            if issued_at.is_some_and(|at| held.is_some_and(|held| at < held)) {
                return Err("a CRL issued before the one held was ignored (rollback)".to_owned());
            }
            self.update(|s| {
                s.revoked = Arc::new(revoked);
                s.issued_at = issued_at.or(s.issued_at);
                s.last_success_ms = Some(now);
            });
            Ok(())
        });
        match fetched {
            Ok(()) => {
                self.refreshes_ok.fetch_add(1, Ordering::Relaxed);
                *self.failure() = None;
            }
            Err(reason) => {
                self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                let reason = bounded(reason);
                let behavior = self.timing.stale_behavior.as_str();
                tracing::warn!(reason, stale_behavior = behavior, "CRL refresh failed");
                *self.failure() = Some(reason);
            }
        }
        self.attempted.send_replace(true);
    }

    /// The revoked AIT ids and the list's `iat`; empty with no `iat` for the registry's "no
    /// revocations" (404). Parsing and verification run on the blocking pool: a CRL of tens of
    /// thousands of revocations is milliseconds of CPU that must not stall a runtime worker.
    async fn fetch(
        &self,
        keys: &Arc<KeyCache>,
    ) -> Result<Option<(HashSet<String>, Option<u64>)>, String> {
        let response = self
            .registry
            .fetch_crl()
            .await
            .map_err(|e| e.reason().to_owned())?;
        if response.status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&response.status) {
            return Err(format!("status {}", response.status));
        }
        let token: Arc<String> = off_thread(move || crl_token_from_body(&response.body))
            .await?
            .ok_or("CRL payload is invalid")?
            .into();
        let verify = |key_set: KeySet| {
            let (token, issuer) = (token.clone(), self.issuer.clone());
            let now_secs = self.clock.now_secs();
            off_thread(move || {
                let expect = Expectations {
                    issuer: Some(&issuer),
                    now_secs,
                };
                verify_crl_index(&token, &key_set, expect).map(|(jtis, iat)| (jtis, Some(iat)))
            })
        };
        let key_set = keys.current().await.map_err(|e| e.to_string())?;
        let verified = match verify(key_set).await? {
            Err(TokenError::UnknownKid(_, kid)) => {
                let key_set = keys
                    .refresh_for_unknown_kid(&kid)
                    .await
                    .map_err(|e| e.to_string())?;
                verify(key_set).await?
            }
            other => other,
        };
        verified.map(Some).map_err(|e| e.to_string())
    }
}

async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| "CRL verification was interrupted".to_owned())
}

/// A failure reason as logged and shown on `/readyz`: a schema error over a large list can name
/// thousands of problems, so it is cut to its first few hundred bytes.
fn bounded(mut reason: String) -> String {
    const MAX: usize = 300;
    if reason.len() > MAX {
        let mut end = MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str(" …");
    }
    reason
}
