//! The demo's client: a steady mix of requests to the gateway at `rate`
//! per second, with a burst of four times the rate for two seconds in
//! every fifteen (so throttles and cold starts happen), until stopped.
//!
//! | share | request |
//! |---|---|
//! | 40 % | `POST /orders` with the API key (1 in 20 without a sku: 400) |
//! | 30 % | `GET /orders/{id}` of a recent order (cache hits), or an unknown id |
//! | 20 % | `GET /stock/{sku}` (1 in 10 an unknown sku: 404) |
//! | 10 % | `POST /fulfilments` of a recent order (starts the workflow) |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;

use super::app::API_KEY;

/// What the traffic got back.
#[derive(Debug, Default)]
pub struct TrafficStats {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub client_errors: AtomicU64,
    pub throttled: AtomicU64,
    pub server_errors: AtomicU64,
    pub failed: AtomicU64,
    /// The X-Ray trace id of the latest order created.
    pub sample_trace: Mutex<Option<String>>,
    recent_orders: Mutex<Vec<String>>,
}

impl TrafficStats {
    pub fn summary(&self) -> String {
        format!(
            "{} requests: {} ok, {} client errors, {} throttled, {} server errors, {} unanswered",
            self.sent.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.client_errors.load(Ordering::Relaxed),
            self.throttled.load(Ordering::Relaxed),
            self.server_errors.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

async fn one_request(client: &reqwest::Client, gateway: &str, stats: &TrafficStats) {
    let pick = fastrand::u32(..100);
    let recent_order = || {
        let recent = stats.recent_orders.lock();
        match recent.len() {
            0 => "o-000000000000".to_string(),
            len if fastrand::u32(..10) == 0 => format!("o-missing-{len}"),
            len => recent[fastrand::usize(..len)].clone(),
        }
    };
    let request = if pick >= 90 {
        client
            .post(format!("{gateway}/prod/fulfilments"))
            .header("x-api-key", API_KEY)
            .header("content-type", "application/json")
            .body(json!({"order_id": recent_order()}).to_string())
    } else if pick < 40 {
        let body = if fastrand::u32(..20) == 0 {
            json!({"quantity": 1})
        } else {
            json!({"sku": format!("sku-{}", fastrand::u32(1..=50)), "quantity": fastrand::u32(1..4)})
        };
        client
            .post(format!("{gateway}/prod/orders"))
            .header("x-api-key", API_KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
    } else if pick < 70 {
        client.get(format!("{gateway}/prod/orders/{}", recent_order()))
    } else {
        let sku = if fastrand::u32(..10) == 0 {
            "sku-999".to_string()
        } else {
            format!("sku-{}", fastrand::u32(1..=50))
        };
        client.get(format!("{gateway}/prod/stock/{sku}"))
    };
    stats.sent.fetch_add(1, Ordering::Relaxed);
    let response = match request.timeout(Duration::from_secs(35)).send().await {
        Ok(response) => response,
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let status = response.status().as_u16();
    let counter = match status {
        429 => &stats.throttled,
        200..=299 => &stats.ok,
        400..=499 => &stats.client_errors,
        _ => &stats.server_errors,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if status == 201 {
        let trace = response
            .headers()
            .get("x-amzn-trace-id")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Root="))
            .map(|value| value.split(';').next().unwrap_or(value).to_string());
        if let Ok(body) = response.json::<serde_json::Value>().await
            && let Some(id) = body["id"].as_str()
        {
            let mut recent = stats.recent_orders.lock();
            recent.push(id.to_string());
            if recent.len() > 200 {
                recent.remove(0);
            }
            *stats.sample_trace.lock() = trace;
        }
    }
}

/// Sends traffic to `gateway` until `stop` says so.
pub async fn run(
    gateway: String,
    rate: f64,
    stats: Arc<TrafficStats>,
    mut stop: watch::Receiver<bool>,
) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let rate = rate.max(0.1);
    loop {
        let in_burst = started.elapsed().as_secs() % 15 >= 13;
        let current = if in_burst { rate * 4.0 } else { rate };
        let (client, gateway, stats) = (client.clone(), gateway.clone(), Arc::clone(&stats));
        tokio::spawn(async move { one_request(&client, &gateway, &stats).await });
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(1.0 / current)) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}
