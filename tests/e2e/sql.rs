//! Read-only SQL: every statement kind that is not a query is refused, no
//! query reaches a file outside the store, answers come as JSON or Arrow
//! IPC within a row limit and a timeout; `tracelake sql` on a data dir.

use datafusion::arrow::ipc::reader::StreamReader;
use serde_json::{Value, json};

use crate::server::{TestServer, TestServerBuilder, tracelake_command};
use crate::service_map::send_workload_ten_minutes_ago;

async fn sql(server: &TestServer, query: &str, extra: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/sql{extra}", server.http_url()))
        .body(query.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_is_read_only_bounded_and_answers_json_and_arrow() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.csv");
    std::fs::write(&secret, "name\nthe-secret-value\n").unwrap();
    let secret_path = secret.display().to_string();
    let mut server = TestServerBuilder::new(&dir.path().join("data")).spawn();
    send_workload_ten_minutes_ago(&server).await;

    // One refused statement of every kind that is not a query.
    let forbidden = [
        "CREATE TABLE t AS SELECT 1".to_string(),
        format!("CREATE EXTERNAL TABLE secret STORED AS CSV LOCATION '{secret_path}'"),
        "CREATE VIEW v AS SELECT * FROM spans".to_string(),
        "DROP TABLE spans".to_string(),
        "INSERT INTO spans SELECT * FROM spans".to_string(),
        "DELETE FROM spans".to_string(),
        "UPDATE spans SET name = 'x'".to_string(),
        format!(
            "COPY (SELECT 1) TO '{}'",
            dir.path().join("out.csv").display()
        ),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "CREATE FUNCTION f() RETURNS INT RETURN 1".to_string(),
    ];
    for statement in &forbidden {
        let (status, body) = sql(&server, statement, "").await;
        assert_eq!(status, 400, "{statement}: {body}");
    }
    assert!(!dir.path().join("out.csv").exists(), "COPY wrote a file");
    // No query reaches a file outside the store.
    for query in [
        format!("SELECT * FROM '{secret_path}'"),
        format!("SELECT * FROM read_csv('{secret_path}')"),
        format!("SELECT * FROM read_parquet('{secret_path}')"),
        "SELECT * FROM secret".to_string(),
    ] {
        let (status, body) = sql(&server, &query, "").await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            !body.contains("the-secret-value"),
            "{query} read the file: {body}"
        );
    }

    // JSON rows.
    let (status, body) = sql(
        &server,
        "SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name ORDER BY service_name",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["columns"], json!(["service_name", "spans"]));
    assert_eq!(answer["truncated"], json!(false));
    assert_eq!(
        answer["rows"][0],
        json!({"service_name": "billing", "spans": 1})
    );

    // The row limit.
    let (status, body) = sql(&server, "SELECT value FROM generate_series(1, 20000)", "").await;
    assert_eq!(status, 200, "{body}");
    let limited: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(limited["rows"].as_array().unwrap().len(), 10_000);
    assert_eq!(limited["truncated"], json!(true));

    // The timeout.
    let (status, body) = sql(
        &server,
        "SELECT count(*) FROM generate_series(1, 100000000000)",
        "?timeout=200ms",
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("timed out"), "{body}");

    // Arrow IPC.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/sql", server.http_url()))
        .header("accept", "application/vnd.apache.arrow.stream")
        .body("SELECT name, duration_ns FROM spans WHERE service_name = 'payments' ORDER BY name")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = response.bytes().await.unwrap();
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None).unwrap();
    let rows: usize = reader.map(|batch| batch.unwrap().num_rows()).sum();
    assert_eq!(rows, 2);

    // `tracelake sql` refuses a data dir a server holds, then works once it stopped.
    let data_dir = dir.path().join("data");
    let busy = tracelake_command()
        .args(["sql", "SELECT 1", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("/v1/sql"));
    server.stop();
    let output = tracelake_command()
        .args([
            "sql",
            "SELECT service_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1",
            "--json",
            "--data-dir",
        ])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["rows"].as_array().unwrap().len(), 5);
    let refused = tracelake_command()
        .args(["sql", "DROP TABLE spans", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(!refused.status.success());
}
