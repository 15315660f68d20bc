//! An in-process registry for unit tests of the caches: scripted answers per endpoint, the last
//! one repeating, and a call count per endpoint. (Integration tests use a real HTTP fake on
//! loopback instead; see `tests/support/registry.rs`.)

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{BoxFuture, KeySource, Registry, Response, TransportError};

pub(crate) type Answer = Result<Response, TransportError>;

#[derive(Default)]
pub(crate) struct FakeRegistry {
    keys: Script,
    crl: Script,
    validate: Script,
}

#[derive(Default)]
struct Script {
    answers: Mutex<(Vec<Answer>, usize)>,
    calls: AtomicUsize,
    hang: AtomicBool,
}

impl Script {
    fn next(&self) -> Answer {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut s = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let (answers, next) = &mut *s;
        let answer = answers
            .get((*next).min(answers.len().saturating_sub(1)))
            .cloned()
            .unwrap_or(Err(TransportError::Refused));
        *next += 1;
        answer
    }

    /// The next answer, or never while the endpoint hangs (the call is still counted).
    /// Like a real call, nothing happens until the future is polled.
    fn answer(&self) -> BoxFuture<'_, Answer> {
        Box::pin(async move {
            let answer = self.next();
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            answer
        })
    }

    fn set(&self, answers: Vec<Answer>) {
        *self.answers.lock().unwrap_or_else(|p| p.into_inner()) = (answers, 0);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Calls {
    pub keys: usize,
    pub crl: usize,
    pub validate: usize,
}

/// A `200` answer with `body`.
pub(crate) fn ok(body: impl Into<Vec<u8>>) -> Answer {
    Ok(Response {
        status: 200,
        body: body.into(),
    })
}

pub(crate) fn status(status: u16) -> Answer {
    Ok(Response {
        status,
        body: Vec::new(),
    })
}

impl FakeRegistry {
    pub(crate) fn set_keys(&self, answers: Vec<Answer>) {
        self.keys.set(answers);
    }

    pub(crate) fn set_crl(&self, answers: Vec<Answer>) {
        self.crl.set(answers);
    }

    pub(crate) fn set_validate(&self, answers: Vec<Answer>) {
        self.validate.set(answers);
    }

    /// While set, keys fetches never answer.
    pub(crate) fn hang_keys(&self, hang: bool) {
        self.keys.hang.store(hang, Ordering::SeqCst);
    }

    /// While set, validations never answer.
    pub(crate) fn hang_validate(&self, hang: bool) {
        self.validate.hang.store(hang, Ordering::SeqCst);
    }

    /// Calls made so far, per endpoint.
    pub(crate) fn calls(&self) -> Calls {
        Calls {
            keys: self.keys.calls.load(Ordering::SeqCst),
            crl: self.crl.calls.load(Ordering::SeqCst),
            validate: self.validate.calls.load(Ordering::SeqCst),
        }
    }
}

impl KeySource for FakeRegistry {
    fn fetch_keys(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        self.keys.answer()
    }
}

impl Registry for FakeRegistry {
    fn fetch_crl(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        self.crl.answer()
    }

    fn validate_access<'a>(
        &'a self,
        _access_token: &'a str,
        _agent_did: &'a str,
        _ait_jti: &'a str,
    ) -> BoxFuture<'a, Result<u16, TransportError>> {
        let answer = self.validate.answer();
        Box::pin(async move { answer.await.map(|r| r.status) })
    }
}
