//! Allowed Claw and bearer answers, encoded once per agent (or token) and policy and shared by
//! their checks.

use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;

/// How many policies' answers one agent keeps encoded; past it, answers are built per check.
/// Policies are the operator's (never the caller's), so this is only a guard.
const SHARED_POLICIES: usize = 16;

/// How many encoded answers the process keeps, all agents together (about 1.1 KiB each with
/// the longest identities: 4.4 MiB, in the memory budget). Past it, a new agent's answers are
/// built per check until an agent's token leaves the AIT cache and gives its answers back.
pub(crate) const SHARED_MAX: usize = 4_096;

/// Encoded answers held, all agents together.
static SHARED_HELD: AtomicUsize = AtomicUsize::new(0);

/// One Claw agent's encoded allow answers, by policy name. An allow answer is built from the
/// agent's identity, the policy's name and the server's fixed credential headers, nothing of
/// the request (no request id, no time), so all the checks of one AIT on one policy share it:
/// built and encoded once, then sent as bytes (`server::Answer::Shared`).
#[derive(Default)]
pub(crate) struct SharedAnswers(ArcSwap<Vec<(Box<str>, Bytes)>>);

impl SharedAnswers {
    /// The answer for `policy`, from `build` the first time.
    pub(crate) fn get_or_build(&self, policy: &str, build: impl FnOnce() -> Bytes) -> Bytes {
        let current = self.0.load();
        if let Some((_, bytes)) = current.iter().find(|(name, _)| **name == *policy) {
            return bytes.clone();
        }
        let bytes = build();
        let reserved = SHARED_HELD
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < SHARED_MAX).then_some(n + 1)
            })
            .is_ok();
        if current.len() < SHARED_POLICIES && reserved {
            let mut added = false;
            self.0.rcu(|answers| {
                let mut answers = Vec::clone(answers);
                added = !answers.iter().any(|(name, _)| **name == *policy);
                if added {
                    answers.push((policy.into(), bytes.clone()));
                }
                answers
            });
            if !added {
                SHARED_HELD.fetch_sub(1, Ordering::Relaxed);
            }
        } else if reserved {
            SHARED_HELD.fetch_sub(1, Ordering::Relaxed);
        }
        bytes
    }
}

/// Encoded answers held now, all agents together.
pub(crate) fn shared_held() -> usize {
    SHARED_HELD.load(Ordering::Relaxed)
}

/// Gives the process's allowance back.
impl Drop for SharedAnswers {
    fn drop(&mut self) {
        SHARED_HELD.fetch_sub(self.0.load().len(), Ordering::Relaxed);
    }
}

/// A cache, not part of the identity.
impl PartialEq for SharedAnswers {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SharedAnswers {}

impl std::fmt::Debug for SharedAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedAnswers({} policies)", self.0.load().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_built_once_per_policy_and_past_the_guard_built_every_time() {
        let answers = SharedAnswers::default();
        let builds = std::cell::Cell::new(0);
        let get = |policy: &str| {
            answers.get_or_build(policy, || {
                builds.set(builds.get() + 1);
                Bytes::from(format!("answer for {policy}"))
            })
        };
        assert_eq!(get("default"), "answer for default");
        assert_eq!(get("default"), "answer for default");
        assert_eq!(get("admin"), "answer for admin");
        assert_eq!(builds.get(), 2);
        for i in 2..SHARED_POLICIES {
            get(&format!("p{i}"));
        }
        assert_eq!(builds.get(), SHARED_POLICIES);
        // Full: a new policy's answer is built for each check, the kept ones still shared.
        assert_eq!(get("one more"), "answer for one more");
        assert_eq!(get("one more"), "answer for one more");
        assert_eq!(get("admin"), "answer for admin");
        assert_eq!(builds.get(), SHARED_POLICIES + 2);
    }
}
