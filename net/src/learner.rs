//! What a learner serves: etcd lets a learner answer only Maintenance.Status and serializable
//! Ranges (its state may lag; it takes no part in the quorum). [`LearnerGuard`] wraps a
//! service and answers every other RPC with etcd's "rpc not supported for learner" while this
//! member is a learner; KV.Range checks serializability itself (net::kv::linearizable).
//!
//! The check is one atomic load per request; a promotion takes effect on the next request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use retcd_raft::NodeStatus;
use tonic::server::NamedService;

use crate::errors::EtcdError;

/// The RPCs a learner serves (by gRPC path).
const ALLOWED: &[&str] = &["/etcdserverpb.KV/Range", "/etcdserverpb.Maintenance/Status"];

/// A service that refuses what a learner does not serve while this member is one.
#[derive(Clone)]
pub struct LearnerGuard<S> {
    inner: S,
    status: Arc<NodeStatus>,
}

impl<S> LearnerGuard<S> {
    pub fn new(inner: S, status: Arc<NodeStatus>) -> Self {
        LearnerGuard { inner, status }
    }
}

impl<S: NamedService> NamedService for LearnerGuard<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for LearnerGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Guarded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.status.is_learner() && !ALLOWED.contains(&req.uri().path()) {
            return Guarded::Refused(Some(EtcdError::NotSupportedForLearner.status().into_http()));
        }
        Guarded::Call(self.inner.call(req))
    }
}

/// The inner call, or the refusal.
pub enum Guarded<F> {
    Call(F),
    Refused(Option<http::Response<tonic::body::Body>>),
}

// tonic's generated services answer with boxed futures, which are Unpin.
impl<F, E> Future for Guarded<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Guarded::Call(f) => Pin::new(f).poll(cx),
            Guarded::Refused(r) => Poll::Ready(Ok(r.take().expect("polled after completion"))),
        }
    }
}
