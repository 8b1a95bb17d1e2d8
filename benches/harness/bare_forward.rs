//! Benchmark harness, not a user example: the least a reverse proxy on hyper and hyper-util
//! does, with the same server builder, upstream connections (hyper's HTTP/1.1 connection API,
//! kept alive in a last-in first-out pool, as `src/proxy/upstream.rs`), runtime choice and
//! allocator as `smart-guard proxy`, and nothing else (no guard, no header work but the URI and `Host`). It
//! measures the HTTP stack's own cost, the floor under the proxy's (`scripts/proxy_load.sh`,
//! BENCHMARKS.md).
//!
//! ```text
//! bare_forward LISTEN_ADDR UPSTREAM_ADDR     # prints {"listening": "…"} when ready
//! ```

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response, Uri, header};
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};

type Sender = http1::SendRequest<Incoming>;

/// The allocator of the `smart-guard` binary, the same file.
#[path = "../../src/bin/smart-guard/allocator.rs"]
mod allocator;

#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().ok_or("LISTEN_ADDR")?.parse()?;
    let upstream: String = args.next().ok_or("UPSTREAM_ADDR")?;
    let one_core = std::thread::available_parallelism().map_or(true, |n| n.get() == 1);
    let runtime = if one_core {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: String) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("{{\"listening\": \"{}\"}}", listener.local_addr()?);
    let host = HeaderValue::from_str(&upstream)?;
    let pool: Arc<Mutex<Vec<Sender>>> = Arc::default();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // As the proxy: no hyper header timer (its watchdog keeps the deadlines, off this path), and
    // messages written from one buffer both ways.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .writev(false)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (pool, upstream, host, builder) = (
            pool.clone(),
            upstream.clone(),
            host.clone(),
            builder.clone(),
        );
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (pool, upstream, host) = (pool.clone(), upstream.clone(), host.clone());
                async move { Ok::<_, Infallible>(forward(request, &pool, &upstream, host).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    mut request: Request<Incoming>,
    pool: &Arc<Mutex<Vec<Sender>>>,
    upstream: &str,
    host: HeaderValue,
) -> Response<Either<GiveBack, Empty<bytes::Bytes>>> {
    let bad_gateway = || {
        let mut response = Response::new(Either::Right(Empty::new()));
        *response.status_mut() = http::StatusCode::BAD_GATEWAY;
        response
    };
    let taken = pool.lock().map(|mut idle| idle.pop()).ok().flatten();
    let mut sender = match taken {
        Some(sender) => sender,
        None => match connect(upstream).await {
            Some(sender) => sender,
            None => return bad_gateway(),
        },
    };
    let target = request.uri().path_and_query().cloned();
    *request.uri_mut() = target.map_or_else(|| Uri::from_static("/"), Uri::from);
    request.headers_mut().insert(header::HOST, host);
    if sender.ready().await.is_err() {
        return bad_gateway();
    }
    let Ok(response) = sender.send_request(request).await else {
        return bad_gateway();
    };
    response.map(|body| {
        Either::Left(GiveBack {
            body,
            sender: Some(sender),
            pool: Arc::clone(pool),
        })
    })
}

/// The upstream body, which gives its connection back to the pool when it has been read to its
/// end (as the proxy's `Lease`).
struct GiveBack {
    body: Incoming,
    sender: Option<Sender>,
    pool: Arc<Mutex<Vec<Sender>>>,
}

impl GiveBack {
    fn give_back_if_done(&mut self) {
        if self.body.is_end_stream()
            && let Some(sender) = self.sender.take()
            && let Ok(mut idle) = self.pool.lock()
        {
            idle.push(sender);
        }
    }
}

impl Drop for GiveBack {
    fn drop(&mut self) {
        self.give_back_if_done();
    }
}

impl http_body::Body for GiveBack {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if polled.is_ready() {
            self.give_back_if_done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

async fn connect(upstream: &str) -> Option<Sender> {
    let tcp = tokio::net::TcpStream::connect(upstream).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .writev(false)
        .max_buf_size(64 * 1024)
        .handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}
