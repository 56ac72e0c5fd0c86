//! Every X-Ray operation tracelake serves answers in the shape of
//! botocore's X-Ray service model (`tests/python/xray_shapes.py`): member
//! names and JSON types, checked recursively on the raw bodies, and the
//! lists and maps X-Ray always sends present even when empty. Real clients
//! are written against that model; the AWS X-Ray SDK for Node.js drops a
//! sampling rule that lacks `Attributes`.

use std::process::Command;

use serde_json::Value;

use crate::python_sdk::python;
use crate::server::TestServerBuilder;

#[tokio::test(flavor = "multi_thread")]
async fn every_xray_operation_answers_in_botocore_model_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServerBuilder::new(dir.path()).spawn();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/xray_shapes.py");
    let output = tokio::task::spawn_blocking({
        let base = server.xray_api_url();
        move || {
            Command::new(python())
                .arg(script)
                .arg(base)
                .output()
                .expect("run python")
        }
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "xray_shapes.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("json report");
    let names = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in {report}"))
            .iter()
            .map(|name| name.as_str().unwrap().to_string())
            .collect()
    };

    // The operations the X-Ray API port serves (collector, sampler and
    // query routers), each found by the script and each checked.
    let mut expected = vec![
        "PutTraceSegments",
        "PutTelemetryRecords",
        "GetSamplingRules",
        "GetSamplingTargets",
        "GetSamplingStatisticSummaries",
        "CreateSamplingRule",
        "UpdateSamplingRule",
        "DeleteSamplingRule",
        "GetServiceGraph",
        "GetTraceSummaries",
        "BatchGetTraces",
        "GetTraceGraph",
        "GetTimeSeriesServiceStatistics",
        "CreateGroup",
        "GetGroup",
        "GetGroups",
        "UpdateGroup",
        "DeleteGroup",
    ];
    expected.sort_unstable();
    assert_eq!(names("served"), expected, "operations the port answers");
    assert_eq!(names("checked"), expected, "operations checked");

    let errors = names("errors");
    assert!(
        errors.is_empty(),
        "{} shape mismatches:\n{}\nbodies: {}",
        errors.len(),
        errors.join("\n"),
        report["bodies"]
    );
    let unexercised = names("unexercised");
    assert!(
        unexercised.is_empty(),
        "the data did not reach these shapes, so their checks proved nothing:\n{}\nbodies: {}",
        unexercised.join("\n"),
        report["bodies"]
    );

    // The root causes name where each failure began: the faulting trace's
    // fault began in orders-api's DynamoDB call (its exception named) and
    // reached the client; the 404 trace's error began in web-frontend.
    let summaries: Value =
        serde_json::from_str(report["bodies"]["GetTraceSummaries"][0].as_str().unwrap()).unwrap();
    let summaries = summaries["TraceSummaries"].as_array().unwrap();
    let faulted: Vec<&Value> = summaries
        .iter()
        .filter(|summary| summary["HasFault"] == true)
        .collect();
    assert_eq!(faulted.len(), 1, "{summaries:?}");
    let causes = faulted[0]["FaultRootCauses"].as_array().unwrap();
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(causes[0]["ClientImpacting"], true);
    let service = &causes[0]["Services"][0];
    assert_eq!(service["Name"], "orders-api", "{service}");
    let path: Vec<&str> = service["EntityPath"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entity| entity["Name"].as_str().unwrap())
        .collect();
    assert_eq!(path, ["orders-api", "DynamoDB"], "{service}");
    assert_eq!(service["EntityPath"][1]["Remote"], true);
    assert_eq!(
        service["EntityPath"][1]["Exceptions"][0]["Name"], "ProvisionedThroughputExceededException",
        "{service}"
    );
    assert_eq!(faulted[0]["ErrorRootCauses"], serde_json::json!([]));
    let not_found = summaries
        .iter()
        .find(|summary| summary["Http"]["HttpStatus"] == 404)
        .expect("the 404 trace");
    let error_service = &not_found["ErrorRootCauses"][0]["Services"][0];
    assert_eq!(error_service["Name"], "web-frontend", "{not_found}");
    assert_eq!(not_found["FaultRootCauses"], serde_json::json!([]));
}
