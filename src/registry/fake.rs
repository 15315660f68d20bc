//! An in-process registry for unit tests of the caches: scripted answers per endpoint, the last
//! one repeating, and a call count per endpoint. (Integration tests use a real HTTP fake on
//! loopback instead; see `tests/support/registry.rs`.)

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{BoxFuture, Registry, Response, TransportError};

pub type Answer = Result<Response, TransportError>;

#[derive(Default)]
pub struct FakeRegistry {
    keys: Script,
    crl: Script,
    validate: Script,
}

#[derive(Default)]
struct Script {
    answers: Mutex<(Vec<Answer>, usize)>,
    calls: AtomicUsize,
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

    fn set(&self, answers: Vec<Answer>) {
        *self.answers.lock().unwrap_or_else(|p| p.into_inner()) = (answers, 0);
    }
}

/// A `200` answer with `body`.
pub fn ok(body: impl Into<Vec<u8>>) -> Answer {
    Ok(Response {
        status: 200,
        body: body.into(),
    })
}

pub fn status(status: u16) -> Answer {
    Ok(Response {
        status,
        body: Vec::new(),
    })
}

impl FakeRegistry {
    pub fn set_keys(&self, answers: Vec<Answer>) {
        self.keys.set(answers);
    }

    pub fn set_crl(&self, answers: Vec<Answer>) {
        self.crl.set(answers);
    }

    pub fn set_validate(&self, answers: Vec<Answer>) {
        self.validate.set(answers);
    }

    /// Calls made so far: (keys, crl, validate).
    pub fn calls(&self) -> (usize, usize, usize) {
        (
            self.keys.calls.load(Ordering::SeqCst),
            self.crl.calls.load(Ordering::SeqCst),
            self.validate.calls.load(Ordering::SeqCst),
        )
    }
}

impl Registry for FakeRegistry {
    fn fetch_keys(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(std::future::ready(self.keys.next()))
    }

    fn fetch_crl(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(std::future::ready(self.crl.next()))
    }

    fn validate_access<'a>(
        &'a self,
        _access_token: &'a str,
        _agent_did: &'a str,
        _ait_jti: &'a str,
    ) -> BoxFuture<'a, Result<u16, TransportError>> {
        Box::pin(std::future::ready(self.validate.next().map(|r| r.status)))
    }
}
