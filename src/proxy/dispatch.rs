//! The proxy's service: the side routes (`/healthz`, `/readyz`, the discovery documents) by
//! exact path, everything else through the guard to the forwarder. One comparison per side
//! path instead of two axum routers on every request.
//!
//! The guard is the layer's own (`service::check`, `service::wait`), acted on directly: the
//! claims go to the forwarder as they are, not through an extension map allocated for each
//! request, and a request needs no clone of the service.

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
use tower_service::Service as _;

use super::{
    bodies::ProxyBody,
    forward::{Answer, Forward},
    server::ForClient,
};
use crate::{
    ResponseFuture,
    guard::Shared,
    service::{self, Checked},
};

/// Side routes by exact path, the rest through the guard to the forwarder.
#[derive(Clone, Debug)]
pub(crate) struct Dispatch {
    side: Router,
    side_paths: Arc<[String]>,
    guard: Arc<Shared>,
    forward: Forward,
}

impl Dispatch {
    pub(crate) fn new(
        side: Router,
        side_paths: Vec<String>,
        guard: Arc<Shared>,
        forward: Forward,
    ) -> Self {
        Self {
            side,
            side_paths: side_paths.into(),
            guard,
            forward,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a side route, or the guard's (a denial, the forwarder's, or a wait).
    #[project = DispatchProj]
    pub(crate) enum DispatchFuture {
        Side { #[pin] future: axum::routing::future::RouteFuture<Infallible> },
        Guarded { #[pin] future: ResponseFuture<Answer, ProxyBody, Infallible> },
    }
}

impl Future for DispatchFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DispatchProj::Side { future } => future
                .poll(cx)
                .map(|answered| answered.map(|response| response.map(ProxyBody::Other))),
            DispatchProj::Guarded { future } => future.poll(cx),
        }
    }
}

impl ForClient for Dispatch {
    type Body = ProxyBody;
    type Future = DispatchFuture;

    fn for_client(&self, addr: SocketAddr) -> Self {
        Self {
            side: self.side.clone(),
            side_paths: Arc::clone(&self.side_paths),
            guard: Arc::clone(&self.guard),
            forward: self.forward.for_client(addr),
        }
    }

    fn respond(&self, mut request: Request<Body>) -> DispatchFuture {
        let path = request.uri().path();
        if self.side_paths.iter().any(|side| side == path) {
            return DispatchFuture::Side {
                future: self.side.clone().call(request),
            };
        }
        let future = match service::check(&self.guard, &mut request) {
            Checked::Admitted(claims) => {
                ResponseFuture::inner(self.forward.forward_verified(request, claims))
            }
            Checked::Denied(response) => ResponseFuture::denied(response),
            Checked::Pending(pending) => {
                let forward = self.forward.clone();
                let method = request.method().clone();
                let future = service::wait(
                    Arc::clone(&self.guard),
                    request,
                    pending,
                    move |request, claims| forward.forward_verified(request, claims),
                );
                ResponseFuture::waiting(service::boxed(&method, future))
            }
        };
        DispatchFuture::Guarded { future }
    }
}
