//! The proxy's service: the side routes (`/healthz`, `/readyz`, the discovery documents) by
//! exact path, everything else through the guard to the forwarder. One comparison per side
//! path instead of two axum routers on every request.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{Router, body::Body};
use http::{Request, Response};
use tower_service::Service;

use super::{forward::Forward, server::ForClient};
use crate::{ResponseFuture, SmartGuard};

/// Side routes by exact path, the rest to the guarded forwarder.
#[derive(Clone, Debug)]
pub(crate) struct Dispatch {
    side: Router,
    side_paths: Arc<[String]>,
    guarded: SmartGuard<Forward>,
}

impl Dispatch {
    pub(crate) fn new(side: Router, side_paths: Vec<String>, guarded: SmartGuard<Forward>) -> Self {
        Self {
            side,
            side_paths: side_paths.into(),
            guarded,
        }
    }
}

impl ForClient for Dispatch {
    fn for_client(&self, addr: SocketAddr) -> Self {
        let mut guarded = self.guarded.clone();
        *guarded.get_mut() = self.guarded.get_ref().for_client(addr);
        Self {
            side: self.side.clone(),
            side_paths: Arc::clone(&self.side_paths),
            guarded,
        }
    }
}

type ForwardFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

pin_project_lite::pin_project! {
    /// The future of one of the two services.
    #[project = DispatchProj]
    pub(crate) enum DispatchFuture {
        Side { #[pin] future: axum::routing::future::RouteFuture<Infallible> },
        Guarded { #[pin] future: ResponseFuture<ForwardFuture, Body, Infallible> },
    }
}

impl Future for DispatchFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DispatchProj::Side { future } => future.poll(cx),
            DispatchProj::Guarded { future } => future.poll(cx),
        }
    }
}

impl Service<Request<Body>> for Dispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.guarded.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> DispatchFuture {
        let path = request.uri().path();
        if self.side_paths.iter().any(|side| side == path) {
            DispatchFuture::Side {
                future: self.side.call(request),
            }
        } else {
            DispatchFuture::Guarded {
                future: self.guarded.call(request),
            }
        }
    }
}
