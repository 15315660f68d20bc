//! The `envoy.service.auth.v3.Authorization` gRPC service, written out rather than taken from
//! envoy-types' generated server: that one encodes every answer with prost from a
//! `CheckResponse`, and answers here are bytes already (`response` writes them, and an allowed
//! agent's are encoded once and shared, `response::SharedAnswers`). Requests are decoded
//! straight into the pipeline's view (`request::wire`).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};

use super::{AUTHORIZATION_SERVICE, CheckService};
use crate::request::RequestView;

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// A Check's answer.
#[derive(Debug)]
pub enum Answer {
    /// Built and encoded for this check.
    Built { allowed: bool, encoded: Vec<u8> },
    /// An allow answer shared by the agent's checks on its policy, already encoded.
    Shared(Bytes),
}

impl Answer {
    /// Whether the check was allowed (gRPC status OK; shared answers are all allow answers).
    pub fn is_ok(&self) -> bool {
        match self {
            Answer::Built { allowed, .. } => *allowed,
            Answer::Shared(_) => true,
        }
    }

    /// The answer as Envoy receives it.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            Answer::Built { encoded, .. } => encoded.clone(),
            Answer::Shared(bytes) => bytes.to_vec(),
        }
    }
}

/// The service as tonic's router takes it.
#[derive(Clone)]
pub(crate) struct CheckServer {
    service: Arc<CheckService>,
    max_decoding_bytes: usize,
}

impl CheckServer {
    /// Checks larger than `max_decoding_bytes` are refused before they are decoded.
    pub(crate) fn new(service: CheckService, max_decoding_bytes: usize) -> Self {
        CheckServer {
            service: Arc::new(service),
            max_decoding_bytes,
        }
    }
}

impl NamedService for CheckServer {
    const NAME: &'static str = AUTHORIZATION_SERVICE;
}

impl<B> tower_service::Service<http::Request<B>> for CheckServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let unary = Unary(self.service.clone());
        let limit = self.max_decoding_bytes;
        Box::pin(async move {
            let mut grpc = Grpc::new(AnswerCodec).apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(unary, request).await)
        })
    }
}

struct Unary(Arc<CheckService>);

impl UnaryService<RequestView> for Unary {
    type Response = Answer;
    type Future = BoxFuture<tonic::Response<Answer>, Status>;

    fn call(&mut self, request: tonic::Request<RequestView>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { Ok(tonic::Response::new(service.answer(request).await)) })
    }
}

/// Decodes `CheckRequest`s straight into the view the pipeline reads (`request::wire`); encodes
/// answers, copying shared ones as they are.
#[derive(Clone, Copy, Default)]
struct AnswerCodec;

impl Codec for AnswerCodec {
    type Encode = Answer;
    type Decode = RequestView;
    type Encoder = AnswerCodec;
    type Decoder = AnswerCodec;

    fn encoder(&mut self) -> AnswerCodec {
        AnswerCodec
    }

    fn decoder(&mut self) -> AnswerCodec {
        AnswerCodec
    }
}

impl Encoder for AnswerCodec {
    type Item = Answer;
    type Error = Status;

    fn encode(&mut self, answer: Answer, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match answer {
            Answer::Built { encoded, .. } => dst.put_slice(&encoded),
            Answer::Shared(bytes) => dst.put_slice(&bytes),
        }
        Ok(())
    }
}

impl Decoder for AnswerCodec {
    type Item = RequestView;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RequestView>, Status> {
        // The message is one contiguous buffer here: taking it copies nothing.
        let message = src.copy_to_bytes(src.remaining());
        // The code prost's own codec gave.
        RequestView::decode(&message)
            .map(Some)
            .map_err(|_| Status::new(Code::Internal, "malformed CheckRequest"))
    }
}
