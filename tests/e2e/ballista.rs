//! `tracelake sql --ballista` (feature `ballista`): SQL on Apache DataFusion
//! Ballista in standalone mode over the store's Parquet files, local and
//! on Garage; the answer must equal the `/v1/sql` endpoint's.

use crate::s3::S3Server;
use crate::server::{TestServer, TestServerBuilder, sql, tracelake_command};
use crate::service_map::send_workload_ten_minutes_ago;

const QUERY: &str = "SELECT service_name, count(*) AS spans, sum(duration_ns) AS total_ns \
                     FROM spans GROUP BY service_name ORDER BY service_name";

/// The expected answer as table cells, one row per line.
async fn expected_rows(server: &TestServer) -> Vec<String> {
    let answer = sql(&server.http_url(), QUERY).await;
    let rows = answer["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(rows.len() >= 3, "{answer}");
    rows.iter()
        .map(|row| {
            format!(
                "{} {} {}",
                row["service_name"].as_str().unwrap(),
                row["spans"],
                row["total_ns"]
            )
        })
        .collect()
}

/// Runs `tracelake sql --ballista` with `args`; its table as rows of cells.
fn ballista_rows(args: &[&str]) -> Vec<String> {
    let mut command = tracelake_command();
    command.args(["sql", "--ballista"]).args(args).arg(QUERY);
    let output = command.output().expect("run tracelake sql");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<String> = stdout
        .lines()
        .filter(|line| line.starts_with('|'))
        .skip(1) // the header
        .map(|line| {
            line.split('|')
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert!(
        !rows.is_empty(),
        "no rows from {command:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn ballista_standalone_answers_sql_like_the_sql_endpoint_on_disk_and_on_garage() {
    // The file backend.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServerBuilder::new(&data).spawn();
    send_workload_ten_minutes_ago(&server).await;
    let expected = expected_rows(&server).await;
    server.stop();
    let data_arg = data.display().to_string();
    assert_eq!(ballista_rows(&["--data-dir", &data_arg]), expected);

    // An S3 bucket (Garage), written by a collector.
    let s3 = S3Server::garage();
    let config = dir.path().join("s3.toml");
    std::fs::write(&config, s3.config("ballista")).unwrap();
    let mut collector = TestServerBuilder::new(&dir.path().join("collector"))
        .config(&format!("role = \"collector\"\n{}", s3.config("ballista")))
        .spawn();
    send_workload_ten_minutes_ago(&collector).await;
    collector.stop();
    let config_arg = config.display().to_string();
    let query_dir = dir.path().join("query").display().to_string();
    assert_eq!(
        ballista_rows(&["--config", &config_arg, "--data-dir", &query_dir]),
        expected
    );
}
