//! `tracelake demo`: tracelake (the same listeners and storage as
//! `serve`) plus the reference stack running an order API, driven by a
//! steady traffic mix, until `--duration` passes or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{oneshot, watch};
use tracelake_gateway_plugin::demo::{Export, Stack, StackSettings, TrafficStats, app, traffic};

use crate::config::Config;
use crate::listen::shutdown_signal;
use crate::serve::{Bound, serve_until};

/// When progress (and a sample trace) is first printed, and how often after.
const FIRST_PROGRESS: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Prints a line; a closed stdout (the reader went away) is not an error
/// worth stopping the demo for.
fn say(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
}

fn address_of(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// `1-5759e988-bd862e3f...` -> the 32 hex digits tracelake's APIs take.
fn trace_hex(xray: &str) -> String {
    xray.trim_start_matches("1-").replace('-', "")
}

/// `address` as a browser opens it: a listener bound to every interface
/// (`0.0.0.0`, `::`) is reached at `localhost`.
fn browsable(address: std::net::SocketAddr) -> String {
    if address.ip().is_unspecified() {
        format!("localhost:{}", address.port())
    } else {
        address.to_string()
    }
}

fn pointers(bound: &Bound, stack: &Stack) -> String {
    let http = format!("http://{}", browsable(bound.http));
    format!(
        "\n\
         tracelake demo: an order API behind a gateway ({gateway}/prod/orders, key {key})\n\
         \x20 web UI           {http}/\n\
         \x20 service map      {http}/v1/service-map\n\
         \x20 search (Tempo)   {http}/api/search?q=%7Bstatus%3Derror%7D\n\
         \x20 SQL              curl --data 'SELECT service_name, count(*) FROM spans GROUP BY 1' {http}/v1/sql\n\
         \x20 Prometheus       scrape {http}/metrics\n\
         \x20 Grafana          Tempo data source URL {http}, Jaeger data source URL {http}/jaeger\n\
         \x20 X-Ray API        aws xray get-service-graph --endpoint-url http://{xray_api} --start-time $(date -d '-10 min' +%s) --end-time $(date +%s)\n\
         \x20 gateway cache    curl -X DELETE -H 'x-tracelake-admin-key: {admin}' {gateway}/_gateway/stages/prod/cache\n",
        gateway = stack.gateway_url,
        admin = stack.admin_key.value(),
        key = app::API_KEY,
        xray_api = browsable(bound.xray_api),
    )
}

pub(crate) async fn demo(
    config: Config,
    duration: Option<Duration>,
    rate: f64,
    export: Export,
) -> anyhow::Result<()> {
    let state_dir = app::state_dir(&config.data_dir);
    let (ready, bound) = oneshot::channel();
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(
        config,
        async move {
            let _ = server_stopped.await;
        },
        move |bound| {
            let _ = ready.send(bound);
        },
    ));
    let bound = match bound.await {
        Ok(bound) => bound,
        Err(_) => return server.await.context("server task")?,
    };
    let stack = Stack::start(StackSettings {
        export,
        xray_udp: bound.xray_udp,
        xray_api_url: format!("http://{}", bound.xray_api),
        otlp_http_url: format!("http://{}", bound.otlp_http),
        state_dir,
    })
    .await
    .map_err(|error| anyhow::anyhow!("starting the demo stack: {error}"))?;
    say(&format!(
        "listening demo-gateway {}",
        address_of(&stack.gateway_url)
    ));
    say(&format!(
        "listening demo-runtime {}",
        address_of(&stack.runtime_url)
    ));
    say(&format!(
        "listening demo-workflows {}",
        address_of(&stack.workflow_url)
    ));
    say(&pointers(&bound, &stack));

    let stats = Arc::new(TrafficStats::default());
    let (stop_traffic, traffic_stop) = watch::channel(false);
    let driver = tokio::spawn(traffic::run(
        stack.gateway_url.clone(),
        rate,
        Arc::clone(&stats),
        traffic_stop,
    ));
    let progress_stats = Arc::clone(&stats);
    let http = browsable(bound.http);
    let progress = tokio::spawn(async move {
        let mut wait = FIRST_PROGRESS;
        loop {
            tokio::time::sleep(wait).await;
            wait = PROGRESS_EVERY;
            let sample = progress_stats.sample_trace.lock().clone();
            say(&format!("demo: {}", progress_stats.summary()));
            if let Some(trace) = sample {
                say(&format!(
                    "demo: a trace: http://{http}/api/traces/{}",
                    trace_hex(&trace)
                ));
            }
        }
    });
    match duration {
        Some(duration) => {
            tokio::select! {
                () = tokio::time::sleep(duration) => {}
                () = shutdown_signal() => {}
            }
        }
        None => shutdown_signal().await,
    }
    progress.abort();
    let _ = stop_traffic.send(true);
    let _ = driver.await;
    // Requests in flight finish (charge-payment times out within 1 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    say(&format!("demo: {}", stats.summary()));
    if let Some(trace) = stats.sample_trace.lock().clone() {
        say(&format!(
            "demo: a trace: http://{}/api/traces/{}",
            browsable(bound.http),
            trace_hex(&trace)
        ));
    }
    let emitted = stack.emitter_stats();
    say(&format!(
        "demo: {} segment documents sent, {} dropped",
        emitted.sent, emitted.dropped
    ));
    stack.stop().await;
    let _ = stop_server.send(());
    server.await.context("server task")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_bound_to_every_interface_are_printed_as_localhost() {
        let cases = [
            ("0.0.0.0:3200", "localhost:3200"),
            ("[::]:3200", "localhost:3200"),
            ("127.0.0.1:3200", "127.0.0.1:3200"),
            ("192.0.2.7:80", "192.0.2.7:80"),
            ("[::1]:3200", "[::1]:3200"),
        ];
        for (bound, shown) in cases {
            assert_eq!(browsable(bound.parse().unwrap()), shown, "{bound}");
        }
    }
}
