//! Benchmark harness, not a user example: the least a reverse proxy on hyper and hyper-util
//! does, with the same server builder, connection pool and runtime choice as `smart-guard
//! proxy`, and nothing else (no guard, no header work but the URI and `Host`). It measures the
//! HTTP stack's own cost, the floor under the proxy's (`scripts/proxy_load.sh`, BENCHMARKS.md).
//!
//! ```text
//! bare_forward LISTEN_ADDR UPSTREAM_ADDR     # prints {"listening": "…"} when ready
//! ```

use std::{convert::Infallible, net::SocketAddr};

use http::{Request, Uri, header};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};

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
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(256)
        .build(http);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (client, upstream, builder) = (client.clone(), upstream.clone(), builder.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let client = client.clone();
                let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
                let uri = format!("http://{upstream}{target}").parse::<Uri>();
                async move {
                    let Ok(uri) = uri else {
                        return Ok::<_, Infallible>(http::Response::new(
                            http_body_util::Either::Right(http_body_util::Empty::new()),
                        ));
                    };
                    *request.uri_mut() = uri;
                    request.headers_mut().remove(header::HOST);
                    Ok(match client.request(request).await {
                        Ok(response) => response.map(http_body_util::Either::Left),
                        Err(_) => {
                            let mut response = http::Response::new(http_body_util::Either::Right(
                                http_body_util::Empty::new(),
                            ));
                            *response.status_mut() = http::StatusCode::BAD_GATEWAY;
                            response
                        }
                    })
                }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
