//! A fake registry endpoint over real HTTP on loopback that misbehaves on demand.
//!
//! Each endpoint (keys, CRL, validate) is its own listener so that one can refuse connections
//! while the others answer. Replies are scripted in order, the last one repeating; every call is
//! counted and recorded. It speaks just enough HTTP/1.1 (`Connection: close`) to control resets,
//! hangs and garbage exactly.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub enum Reply {
    /// A status with a body (JSON or anything) and content type.
    Body(u16, String),
    Status(u16),
    /// A redirect (`301`, `302`, `307`, `308`) to this `Location`.
    Redirect(u16, String),
    /// Close the connection without answering (the caller sees no response).
    Reset,
    /// Accept and never answer.
    Hang,
    Delay(Duration, Box<Reply>),
    /// Decided per request: the request and its call number (1 for the first).
    By(Rule),
}

/// A reply decided from the request, for endpoints that answer by content (a validate endpoint
/// that knows some tokens and throttles past a rate).
#[derive(Clone)]
pub struct Rule(pub Arc<Decide>);

/// Decides a reply from the request and its call number.
pub type Decide = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rule")
    }
}

impl Reply {
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply::Body(status, body.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub struct FakeEndpoint {
    pub url: String,
    script: Arc<Mutex<(Vec<Reply>, usize)>>,
    calls: Arc<AtomicUsize>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for FakeEndpoint {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }
}

impl FakeEndpoint {
    /// Serves `replies` at `path` on a fresh loopback port.
    pub async fn start(path: &str, replies: Vec<Reply>) -> FakeEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new((replies, 0)));
        let calls = Arc::new(AtomicUsize::new(0));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let (s, c, r) = (script.clone(), calls.clone(), recorded.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, c, r) = (s.clone(), c.clone(), r.clone());
                tokio::spawn(async move { handle(stream, s, c, r).await });
            }
        });
        FakeEndpoint {
            url,
            script,
            calls,
            recorded,
            task: Mutex::new(Some(task)),
        }
    }

    /// A URL whose port refuses connections.
    pub async fn refused(path: &str) -> FakeEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        drop(listener);
        FakeEndpoint {
            url,
            script: Arc::new(Mutex::new((Vec::new(), 0))),
            calls: Arc::new(AtomicUsize::new(0)),
            recorded: Arc::new(Mutex::new(Vec::new())),
            task: Mutex::new(None),
        }
    }

    /// Closes the listener: from now on connections are refused (and not counted).
    pub async fn go_down(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    /// Replaces the script (the position restarts).
    pub fn set(&self, replies: Vec<Reply>) {
        *self.script.lock().unwrap() = (replies, 0);
    }
}

async fn handle(
    mut stream: TcpStream,
    script: Arc<Mutex<(Vec<Reply>, usize)>>,
    calls: Arc<AtomicUsize>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
    recorded.lock().unwrap().push(request.clone());
    let reply = {
        let mut s = script.lock().unwrap();
        let (replies, next) = &mut *s;
        let reply = replies
            .get((*next).min(replies.len().saturating_sub(1)))
            .cloned()
            .unwrap_or(Reply::Status(500));
        *next += 1;
        reply
    };
    let reply = match reply {
        Reply::By(rule) => (rule.0)(&request, call),
        other => other,
    };
    send(&mut stream, reply).await;
}

async fn send(stream: &mut TcpStream, mut reply: Reply) {
    loop {
        match reply {
            Reply::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                reply = *inner;
            }
            Reply::Hang => {
                std::future::pending::<()>().await;
            }
            Reply::Reset | Reply::By(_) => return,
            Reply::Status(status) => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes()).await;
                return;
            }
            Reply::Redirect(status, location) => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes()).await;
                return;
            }
            Reply::Body(status, body) => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                return;
            }
        }
    }
}

async fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Recorded {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
