//! The tower [`Layer`] that traces every request of an axum/hyper service.
//!
//! Per request: the incoming `X-Amzn-Trace-Id` (or, without it, a W3C
//! `traceparent`) is continued, a malformed one is ignored (a new trace
//! starts, as the SDKs do); the [`TraceContext`] goes into the request's
//! extensions for handlers and [`crate::client::TracedClient`]; the
//! response status sets error (4xx), throttle (429) or fault (5xx) and the
//! response carries `X-Amzn-Trace-Id: Root=..;Sampled=..`. A handler that
//! fails (the inner service's error) is recorded as a fault with the
//! error as the exception.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracelake_sampler::TraceHeader;
use tracelake_sampler::trace_header::HEADER_NAME;

use crate::tracer::{RequestInfo, TraceContext, Tracer};

/// Traces requests with `tracer`.
#[derive(Debug, Clone)]
pub struct XRayLayer {
    tracer: Tracer,
}

impl XRayLayer {
    pub fn new(tracer: Tracer) -> Self {
        Self { tracer }
    }
}

impl<S> Layer<S> for XRayLayer {
    type Service = XRayService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        XRayService {
            inner,
            tracer: self.tracer.clone(),
        }
    }
}

/// The service [`XRayLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct XRayService<S> {
    inner: S,
    tracer: Tracer,
}

/// The trace header of a request: `X-Amzn-Trace-Id`, else `traceparent`;
/// `None` when absent or malformed.
pub fn incoming_header<B>(request: &Request<B>) -> Option<TraceHeader> {
    let text = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    if let Some(value) = text(HEADER_NAME) {
        return TraceHeader::parse(value).ok();
    }
    text("traceparent").and_then(|value| TraceHeader::from_traceparent(value).ok())
}

/// What the sampling rules and the segment's `http.request` need.
pub fn request_info<B>(request: &Request<B>) -> RequestInfo {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let host = header("host")
        .or_else(|| request.uri().host().map(str::to_string))
        .unwrap_or_default();
    let path = request.uri().path().to_string();
    let url = match request.uri().path_and_query() {
        Some(path_and_query) if !host.is_empty() => format!("http://{host}{path_and_query}"),
        Some(path_and_query) => path_and_query.to_string(),
        None => path.clone(),
    };
    RequestInfo {
        method: request.method().to_string(),
        client_ip: header("x-forwarded-for")
            .and_then(|forwarded| forwarded.split(',').next().map(|ip| ip.trim().to_string())),
        user_agent: header("user-agent"),
        host,
        path,
        url,
    }
}

impl<S, B, R> Service<Request<B>> for XRayService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
    B: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let context = self
            .tracer
            .start(incoming_header(&request), &request_info(&request));
        request.extensions_mut().insert(context.clone());
        // The clone that was polled ready serves this request (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let result = inner.call(request).await;
            match &result {
                Ok(response) => context.finish(Some(response.status().as_u16())),
                Err(error) => {
                    let message = error.to_string();
                    context.with_segment(|segment| {
                        segment.add_exception("HandlerError", &message, false)
                    });
                    context.finish(None);
                }
            }
            result.map(|mut response| {
                if let Ok(value) = HeaderValue::from_str(&context.response_header().to_string()) {
                    response.headers_mut().insert(HEADER_NAME, value);
                }
                response
            })
        })
    }
}

/// The request's trace, for handlers: `Option<Extension<TraceContext>>`
/// in axum, or this on a raw request.
pub fn context_of<B>(request: &Request<B>) -> Option<&TraceContext> {
    request.extensions().get::<TraceContext>()
}
