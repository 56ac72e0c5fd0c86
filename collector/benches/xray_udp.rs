//! X-Ray daemon UDP ingest end to end in one process: datagrams sent at a
//! fixed rate to the receiver on 127.0.0.1, decoded, mapped and appended to
//! the WAL (`fsync = always`). Steps the rate up and reports, for each, the
//! datagrams received, stored and dropped; the figure to quote is the
//! highest rate with zero loss.
//!
//! cargo bench -p tracelake-collector --bench xray_udp
//! (without `--bench`, as `cargo test --benches` runs it: one short low-rate
//! step that must lose nothing)

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracelake_collector::Pipeline;
use tracelake_collector::xray::XrayIngest;
use tracelake_collector::xray::udp::{self, UdpConfig, UdpStats};
use tracelake_storage::{Storage, StorageConfig, local_store};

mod common;

const HEADER: &[u8] = b"{\"format\":\"json\",\"version\":1}\n";

struct Step {
    rate: u64,
    sent: u64,
    received: u64,
    stored: u64,
    dropped: u64,
    elapsed: Duration,
}

fn run_step(runtime: &tokio::runtime::Runtime, rate: u64, seconds: f64, seed_base: u64) -> Step {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        data_dir: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let (storage, _) = runtime
        .block_on(Storage::open(config, local_store(dir.path()).unwrap()))
        .unwrap();
    let ingest = XrayIngest::new(Pipeline::new(Arc::new(storage.clone())));
    let stats = Arc::new(UdpStats::default());
    let socket = runtime.block_on(async {
        udp::bind(
            "127.0.0.1:0".parse().unwrap(),
            UdpConfig::default().socket_receive_buffer,
        )
        .unwrap()
    });
    let address = socket.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let receiver = runtime.spawn(udp::run(
        socket,
        ingest,
        UdpConfig::default(),
        Arc::clone(&stats),
        async {
            let _ = stopped.await;
        },
    ));

    let total = (rate as f64 * seconds) as u64;
    let datagrams: Vec<Vec<u8>> = (0..total)
        .map(|index| [HEADER, &common::sample_document(seed_base + index)].concat())
        .collect();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    // Paced in 1 ms slices.
    let per_slice = (rate / 1000).max(1);
    for (slice, chunk) in datagrams.chunks(per_slice as usize).enumerate() {
        let due = started + Duration::from_secs_f64(slice as f64 * per_slice as f64 / rate as f64);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        for datagram in chunk {
            let _ = sender.send_to(datagram, address);
        }
    }
    let elapsed = started.elapsed();
    // Let the queue drain.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.documents_accepted.load(Ordering::Relaxed)
        + stats.datagrams_dropped.load(Ordering::Relaxed)
        < stats.datagrams_received.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let _ = stop.send(());
    runtime.block_on(receiver).unwrap();
    runtime.block_on(storage.shutdown()).unwrap();
    Step {
        rate,
        sent: total,
        received: stats.datagrams_received.load(Ordering::Relaxed),
        stored: stats.documents_accepted.load(Ordering::Relaxed),
        dropped: stats.datagrams_dropped.load(Ordering::Relaxed),
        elapsed,
    }
}

fn main() {
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (rates, seconds): (Vec<u64>, f64) = if measuring {
        (
            vec![2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 40_000],
            3.0,
        )
    } else {
        (vec![500], 0.5)
    };
    println!("x-ray udp ingest, documents of ~2 KB with 4 spans each, fsync=always");
    let mut best = 0;
    for (index, rate) in rates.into_iter().enumerate() {
        let step = run_step(&runtime, rate, seconds, index as u64 * 1_000_000);
        let lost = step.sent - step.stored;
        println!(
            "rate {:>6}/s: sent {:>6} in {:>5.2}s, received {:>6}, stored {:>6}, dropped {:>5}, lost {:>6}",
            step.rate,
            step.sent,
            step.elapsed.as_secs_f64(),
            step.received,
            step.stored,
            step.dropped,
            lost
        );
        if lost == 0 {
            best = best.max(step.rate);
        }
        if !measuring {
            assert_eq!(lost, 0, "a low-rate burst lost datagrams");
        }
    }
    println!("highest rate with zero loss: {best} documents/s");
}
