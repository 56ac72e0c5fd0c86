//! A data dir written by the release before this one opens here and
//! answers as that release did: `tests/fixtures/datadir-2026-12-06` holds
//! blocks and derived rows flushed at a shutdown and a WAL a killed
//! process left, and that release's answers to Tempo, Jaeger, SQL, TraceQL
//! metrics and service-map requests over it
//! (`scripts/write-datadir-fixture.sh` wrote both; run it again with an
//! older binary to add a release).

use std::path::Path;

use serde_json::Value;

use crate::server::TestServerBuilder;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/datadir-2026-12-06"
);

/// An answer without what depends on where the spans sat when it was
/// computed (head or block, which block first) rather than on the data:
/// the bytes a query read (`inspectedBytes`), and which spans were picked
/// as exemplars (any span of a series may be, as in Tempo).
fn data_of(mut answer: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("inspectedBytes");
                map.remove("exemplars");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut answer);
    answer
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Asks the fixture requests `wanted` picks (by name) of the server at
/// `url` and compares the answers with the stored ones; how many were
/// compared.
async fn compare_answers(url: &str, wanted: impl Fn(&str) -> bool) -> usize {
    let client = reqwest::Client::new();
    let requests = std::fs::read_to_string(Path::new(FIXTURE).join("requests")).unwrap();
    let mut compared = 0;
    for line in requests.lines() {
        let (name, path) = line.split_once('\t').unwrap();
        if !wanted(name) {
            continue;
        }
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(FIXTURE).join(format!("answers/{name}.json")))
                .unwrap(),
        )
        .unwrap();
        let response = client.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}: {path}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(data_of(answer), data_of(expected), "{name}: {path}");
        compared += 1;
    }
    compared
}

/// The span blocks under `data`, and whether each stores `duration_ns`
/// (blocks written before it was derived on read do).
fn blocks_storing_duration(data: &Path) -> Vec<bool> {
    let mut found = Vec::new();
    let spans = data.join("tenants/single-tenant/spans");
    for day in std::fs::read_dir(spans).unwrap() {
        for hour in std::fs::read_dir(day.unwrap().path()).unwrap() {
            for file in std::fs::read_dir(hour.unwrap().path()).unwrap() {
                let path = file.unwrap().path();
                if path
                    .extension()
                    .is_some_and(|extension| extension == "parquet")
                {
                    let reader = datafusion::parquet::file::reader::SerializedFileReader::new(
                        std::fs::File::open(&path).unwrap(),
                    )
                    .unwrap();
                    use datafusion::parquet::file::reader::FileReader;
                    let schema = reader.metadata().file_metadata().schema_descr_ptr();
                    found.push(
                        schema
                            .columns()
                            .iter()
                            .any(|column| column.name() == "duration_ns"),
                    );
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_from_the_release_before_opens_and_answers_identically() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The server writes to its data dir (WAL replay, flushes): a copy.
    copy_dir(&Path::new(FIXTURE).join("data"), &data);
    let builder = || {
        TestServerBuilder::new(&data)
            .arg("--retention-period")
            .arg("0s")
    };
    let mut server = builder().spawn();
    let compared = compare_answers(&server.http_url(), |_| true).await;
    assert!(compared >= 9, "requests compared: {compared}");
    // The spans the WAL held are flushed at shutdown into a block of
    // today's layout (no `duration_ns`), beside the older blocks that store
    // it: a restarted server reads both in one scan and answers the same.
    assert!(server.stop().success());
    let layouts = blocks_storing_duration(&data);
    assert!(
        layouts.contains(&true) && layouts.contains(&false),
        "block layouts (stores duration_ns): {layouts:?}"
    );
    // The answers read from spans, that is. The service map and the
    // TraceQL rate come from the precomputed rows, which never counted the
    // spans the killed process left in its WAL: with those spans in a block
    // instead of the head, their minutes are answered from the rows alone.
    let server = builder().spawn();
    let from_spans = |name: &str| name != "service_map" && name != "traceql_rate";
    assert_eq!(
        compare_answers(&server.http_url(), from_spans).await,
        compared - 2
    );
    // The answers include the spans only the WAL held: more than the
    // blocks' metas count.
    let answer: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(FIXTURE).join("answers/sql_by_service.json")).unwrap(),
    )
    .unwrap();
    let answered: u64 = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["spans"].as_u64().unwrap())
        .sum();
    let spans = Path::new(FIXTURE).join("data/tenants/single-tenant/spans");
    let mut in_blocks = 0;
    for day in std::fs::read_dir(spans).unwrap() {
        for hour in std::fs::read_dir(day.unwrap().path()).unwrap() {
            for file in std::fs::read_dir(hour.unwrap().path()).unwrap() {
                let path = file.unwrap().path();
                if path.to_string_lossy().ends_with(".meta.json") {
                    let meta: Value =
                        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
                    in_blocks += meta["span_count"].as_u64().unwrap();
                }
            }
        }
    }
    assert!(
        in_blocks > 0 && answered > in_blocks,
        "{answered} spans answered, {in_blocks} in blocks"
    );
}
