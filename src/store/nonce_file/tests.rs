use super::turns::{BUSY, Turn, Waiting};
use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("claw-nonce-log-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test]
async fn records_survive_reopening_and_expired_segments_go() {
    let d = dir("reopen");
    let store = FileNonceStore::open(&d, 100, 100, Fsync::Interval(1000), 1_000).unwrap();
    for n in ["a", "b", "c"] {
        let outcome = store.check_and_record("did", n, 50_000, 1_000).await;
        assert_eq!(outcome, Ok(NonceOutcome::Fresh));
    }
    assert_eq!(
        store.check_and_record("did", "a", 50_000, 1_000).await,
        Ok(NonceOutcome::Replay)
    );
    drop(store);
    let store = FileNonceStore::open(&d, 100, 100, Fsync::Interval(1000), 2_000).unwrap();
    assert_eq!(store.restored(), 3);
    for n in ["a", "b", "c"] {
        let outcome = store.check_and_record("did", n, 50_000, 2_000).await;
        assert_eq!(outcome, Ok(NonceOutcome::Replay), "{n}");
    }
    drop(store);
    // After every record has expired, reopening drops the old segment.
    let store = FileNonceStore::open(&d, 100, 100, Fsync::Always, 50_000).unwrap();
    assert_eq!(store.restored(), 0);
    assert_eq!(segments(&d).unwrap().len(), 0);
    drop(store);
    std::fs::remove_dir_all(&d).unwrap();
}

fn direct(store: &FileNonceStore) -> &Direct {
    match &store.log {
        Log::Direct(direct) => direct,
        Log::Queued(_) => panic!("fsync: interval writes directly"),
    }
}

use std::task::Poll;

/// Polls `future` once.
async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx)))
        .await
}

/// Paused time: every turn comes within `BUSY` of the last write, as under load.
#[tokio::test(start_paused = true)]
async fn records_of_checks_running_together_go_out_in_one_write() {
    let d = dir("together");
    let store = Arc::new(FileNonceStore::open(&d, 100, 100, Fsync::Interval(1000), 1_000).unwrap());
    let first = store.check_and_record("did", "first", 50_000, 1_000).await;
    assert_eq!(first, Ok(NonceOutcome::Fresh));
    assert_eq!(direct(&store).writes.load(Ordering::Relaxed), 1);
    let checks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .check_and_record("did", &format!("n{i}"), 50_000, 1_000)
                    .await
            })
        })
        .collect();
    for check in checks {
        assert_eq!(check.await.unwrap(), Ok(NonceOutcome::Fresh));
    }
    // The first check took the turn and yielded; the other nine added their records.
    assert_eq!(direct(&store).writes.load(Ordering::Relaxed), 2);
    // Alone, a check writes its own record.
    assert_eq!(
        store.check_and_record("did", "alone", 50_000, 1_000).await,
        Ok(NonceOutcome::Fresh)
    );
    assert_eq!(direct(&store).writes.load(Ordering::Relaxed), 3);
    drop(store);
    let store = FileNonceStore::open(&d, 100, 100, Fsync::Interval(1000), 2_000).unwrap();
    assert_eq!(store.restored(), 12);
    drop(store);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A check with no write in the last `BUSY` writes at once: it is answered on its first poll.
#[tokio::test(start_paused = true)]
async fn a_check_alone_writes_at_once() {
    let d = dir("alone");
    let store = FileNonceStore::open(&d, 100, 100, Fsync::Interval(1000), 1_000).unwrap();
    let mut first = Box::pin(store.check_and_record("did", "a", 50_000, 1_000));
    assert_eq!(
        poll_once(&mut first).await,
        Poll::Ready(Ok(NonceOutcome::Fresh))
    );
    tokio::time::advance(BUSY).await;
    let mut later = Box::pin(store.check_and_record("did", "b", 50_000, 1_000));
    assert_eq!(
        poll_once(&mut later).await,
        Poll::Ready(Ok(NonceOutcome::Fresh))
    );
    // Within `BUSY` of a write, the turn yields first.
    let mut busy = Box::pin(store.check_and_record("did", "c", 50_000, 1_000));
    assert!(poll_once(&mut busy).await.is_pending());
    assert_eq!(busy.await, Ok(NonceOutcome::Fresh));
    assert_eq!(direct(&store).writes.load(Ordering::Relaxed), 3);
    drop((first, later));
    drop(store);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Envoy may give up on a check (its future is dropped) while it has the turn, or after it
/// was handed the turn: the records waiting for it are written all the same, and the turn
/// goes on. (Paused time, so the turn yields as under load.)
#[tokio::test(start_paused = true)]
async fn a_check_dropped_with_the_turn_still_writes_the_waiting_records() {
    let d = dir("dropped");
    let store = FileNonceStore::open(&d, 100, 100, Fsync::Interval(1000), 1_000).unwrap();
    let warm = store.check_and_record("did", "warm", 50_000, 1_000).await;
    assert_eq!(warm, Ok(NonceOutcome::Fresh));
    let mut first = Box::pin(store.check_and_record("did", "a", 50_000, 1_000));
    assert!(
        poll_once(&mut first).await.is_pending(),
        "yields with the turn"
    );
    let mut second = Box::pin(store.check_and_record("did", "b", 50_000, 1_000));
    assert!(
        poll_once(&mut second).await.is_pending(),
        "waits for the turn"
    );
    drop(first);
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), second).await;
    assert_eq!(
        answered.expect("the waiting check is answered"),
        Ok(NonceOutcome::Fresh)
    );
    let log = direct(&store);
    assert_eq!(log.writes.load(Ordering::Relaxed), 2);
    // Handed the turn, then dropped before it saw so: it writes on its way out.
    let (tell, told) = tokio::sync::oneshot::channel();
    {
        let mut batch = lock(&log.batch);
        encode(record_key("did", "c"), 50_000, &mut batch.records);
        batch.taken = true;
    }
    tell.send(Turn::Yours).ok().unwrap();
    drop(Waiting { log, told });
    assert_eq!(log.writes.load(Ordering::Relaxed), 3);
    assert!(!lock(&log.batch).taken, "the turn is free again");
    assert_eq!(
        store.check_and_record("did", "d", 50_000, 1_000).await,
        Ok(NonceOutcome::Fresh)
    );
    drop(store);
    let store = FileNonceStore::open(&d, 100, 100, Fsync::Interval(1000), 2_000).unwrap();
    assert_eq!(store.restored(), 5);
    drop(store);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_torn_or_corrupt_record_is_skipped_not_fatal() {
    let d = dir("torn");
    std::fs::create_dir_all(&d).unwrap();
    let mut bytes = Vec::new();
    encode(1, 9_000, &mut bytes);
    encode(2, 9_000, &mut bytes);
    bytes[RECORD + 3] ^= 0xff; // the second record is corrupt
    encode(3, 9_000, &mut bytes);
    bytes.extend_from_slice(&[7; 10]); // a torn tail
    std::fs::write(d.join("nonces-000000000004.log"), &bytes).unwrap();
    let store = FileNonceStore::open(&d, 100, 100, Fsync::Always, 1_000).unwrap();
    assert_eq!(store.restored(), 2);
    assert_eq!(
        store.memory.check_key(1, 7, 9_000, 1_000),
        Ok(NonceOutcome::Replay)
    );
    assert_eq!(
        store.memory.check_key(2, 7, 9_000, 1_000),
        Ok(NonceOutcome::Fresh)
    );
    drop(store);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Two threads of checks, a third of them given up on after their first poll (Envoy's
/// deadline, a reset stream): every other check is answered, none waits forever on a turn a
/// dropped check held, and every record, the dropped checks' included, is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_given_up_on_never_hold_up_the_others() {
    let d = dir("given-up");
    let store = FileNonceStore::open(&d, 10_000, 10_000, Fsync::Interval(1000), 1_000).unwrap();
    let store = Arc::new(store);
    let mut checks = tokio::task::JoinSet::new();
    for i in 0..3_000 {
        let store = store.clone();
        checks.spawn(async move {
            let nonce = format!("n{i}");
            let mut check = store.check_and_record("did", &nonce, 50_000, 1_000);
            match i % 3 {
                // Polled once, then dropped unless answered.
                0 => match poll_once(&mut check).await {
                    Poll::Ready(outcome) => Some(outcome),
                    Poll::Pending => None,
                },
                _ => Some(check.await),
            }
        });
    }
    let all = async {
        let mut answered = 0;
        while let Some(outcome) = checks.join_next().await {
            if let Some(outcome) = outcome.unwrap() {
                assert_eq!(outcome, Ok(NonceOutcome::Fresh));
                answered += 1;
            }
        }
        answered
    };
    let answered = tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("every check that was not given up on is answered");
    assert!(answered >= 2_000, "{answered}");
    let writes = direct(&store).writes.load(Ordering::Relaxed);
    drop(store);
    let store = FileNonceStore::open(&d, 10_000, 10_000, Fsync::Interval(1000), 2_000).unwrap();
    assert_eq!(store.restored(), 3_000, "in {writes} writes");
    drop(store);
    std::fs::remove_dir_all(&d).unwrap();
}
