//! Every request a listener answers, timed: `tracelake_request_duration_seconds`
//! (a histogram) and `tracelake_requests_total`, labelled by `listener` (the
//! name of its `listening` line), `route` and `status` class (`2xx` ...
//! `5xx`).
//!
//! `route` is the route's template as it was declared (`/api/traces/{id}`),
//! never the request's path, so the label set stays bounded by the routes a
//! listener has: a path no route matched is `unmatched`. gRPC routes are the
//! methods a server serves (`/opentelemetry.proto...TraceService/Export`).
//! The time is until the response's head is ready; a streamed body is not
//! waited for.
//!
//! ```text
//!  request --> Timed (start) --> key check --> route --> handler
//!  response <-- Timed (observe: listener, route, status class, seconds) <--
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// Upper bounds of the request-duration buckets, seconds: from a cached
/// read (sub-millisecond) to a long search (the query timeout's range).
pub const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// One series of the two request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: &'static str,
    pub route: String,
    pub status: &'static str,
}

fn new_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// The request metrics of every listener of a process; cheap to clone.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
    requests: Family<RequestLabels, Counter>,
}

impl RequestMetrics {
    /// Registers both metrics in `registry` (which ends their help with a
    /// full stop).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            durations: Family::new_with_constructor(new_histogram),
            requests: Family::default(),
        };
        registry.register(
            "tracelake_request_duration_seconds",
            "Time to answer a request (to the response head), by listener, route template and status class",
            metrics.durations.clone(),
        );
        registry.register(
            "tracelake_requests",
            "Requests answered, by listener, route template and status class",
            metrics.requests.clone(),
        );
        metrics
    }

    /// Counts one answered request.
    pub fn observe(&self, listener: &'static str, route: &str, status: StatusCode, seconds: f64) {
        let labels = RequestLabels {
            listener,
            route: route.to_string(),
            status: status_class(status),
        };
        self.durations.get_or_create(&labels).observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    /// A layer timing an axum router's requests (added with
    /// `Router::layer`, which runs after routing, so the route template is
    /// known).
    pub fn layer(&self, listener: &'static str) -> Timed {
        Timed {
            metrics: self.clone(),
            listener,
            route: RouteOf::Matched,
        }
    }

    /// A layer timing a gRPC server's requests: `methods` are the paths it
    /// serves; any other path is `unmatched`.
    pub fn grpc_layer(&self, listener: &'static str, methods: &'static [&'static str]) -> Timed {
        Timed {
            metrics: self.clone(),
            listener,
            route: RouteOf::Methods(methods),
        }
    }
}

/// `2xx`, `4xx`, ...
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

#[derive(Debug, Clone, Copy)]
enum RouteOf {
    /// The template axum matched.
    Matched,
    /// One of a fixed set of paths.
    Methods(&'static [&'static str]),
}

impl RouteOf {
    fn of<B>(self, request: &Request<B>) -> Arc<str> {
        match self {
            Self::Matched => request
                .extensions()
                .get::<MatchedPath>()
                .map_or_else(|| UNMATCHED.into(), |matched| matched.as_str().into()),
            Self::Methods(methods) => {
                let path = request.uri().path();
                methods
                    .iter()
                    .find(|method| **method == path)
                    .map_or(UNMATCHED, |method| method)
                    .into()
            }
        }
    }
}

/// The layer of [`RequestMetrics::layer`] and [`RequestMetrics::grpc_layer`].
#[derive(Debug, Clone)]
pub struct Timed {
    metrics: RequestMetrics,
    listener: &'static str,
    route: RouteOf,
}

impl<S> Layer<S> for Timed {
    type Service = TimedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimedService {
            inner,
            timed: self.clone(),
        }
    }
}

/// The service of [`Timed`].
#[derive(Debug, Clone)]
pub struct TimedService<S> {
    inner: S,
    timed: Timed,
}

impl<S, B, R> Service<Request<B>> for TimedService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let route = self.timed.route.of(&request);
        let answer = self.inner.call(request);
        let timed = self.timed.clone();
        Box::pin(async move {
            let result = answer.await;
            // A service error (not an HTTP answer) is a failure to answer.
            let status = result
                .as_ref()
                .map_or(StatusCode::INTERNAL_SERVER_ERROR, |response| {
                    response.status()
                });
            timed.metrics.observe(
                timed.listener,
                &route,
                status,
                started.elapsed().as_secs_f64(),
            );
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn exposition(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_never_by_path() {
        let mut registry = Registry::default();
        let metrics = RequestMetrics::register(&mut registry);
        let router = Router::new()
            .route("/api/traces/{id}", get(|| async { "trace" }))
            .route(
                "/fail",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
            )
            .layer(metrics.layer("http"));
        for path in [
            "/api/traces/1",
            "/api/traces/2",
            "/fail",
            "/secret/a",
            "/secret/b",
        ] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            router.clone().oneshot(request).await.unwrap();
        }
        let text = exposition(&registry);
        for line in [
            "tracelake_requests_total{listener=\"http\",route=\"/api/traces/{id}\",status=\"2xx\"} 2",
            "tracelake_requests_total{listener=\"http\",route=\"/fail\",status=\"5xx\"} 1",
            "tracelake_requests_total{listener=\"http\",route=\"unmatched\",status=\"4xx\"} 2",
            "tracelake_request_duration_seconds_count{listener=\"http\",route=\"/api/traces/{id}\",status=\"2xx\"} 2",
            "tracelake_request_duration_seconds_bucket{le=\"+Inf\",listener=\"http\",route=\"/fail\",status=\"5xx\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert!(
            !text.contains("/secret"),
            "a raw path became a label\n{text}"
        );
    }

    #[tokio::test]
    async fn grpc_methods_are_the_only_routes() {
        let mut registry = Registry::default();
        let metrics = RequestMetrics::register(&mut registry);
        let service = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        });
        let timed = metrics
            .grpc_layer("otlp-grpc", &["/pkg.Service/Export"])
            .layer(service);
        for path in ["/pkg.Service/Export", "/pkg.Service/Other"] {
            let request = Request::post(path).body(Body::empty()).unwrap();
            timed.clone().oneshot(request).await.unwrap();
        }
        let text = exposition(&registry);
        assert!(text.contains(
            "tracelake_requests_total{listener=\"otlp-grpc\",route=\"/pkg.Service/Export\",status=\"2xx\"} 1"
        ));
        assert!(text.contains(
            "tracelake_requests_total{listener=\"otlp-grpc\",route=\"unmatched\",status=\"2xx\"} 1"
        ));
    }
}
