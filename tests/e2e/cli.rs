//! The command line: configuration layering and refusal of bad config.

use crate::server::tracelake_command as tracelake;

#[test]
fn print_config_layers_defaults_file_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tracelake.toml");
    std::fs::write(
        &file,
        "data_dir = \"/from-file\"\n[listen]\nhttp = \"127.0.0.1:1111\"\notlp_grpc = \"127.0.0.1:2222\"\n[wal]\nfsync = \"interval\"\n",
    )
    .unwrap();
    let output = tracelake()
        .args(["serve", "--print-config", "--listen-http", "127.0.0.1:3333"])
        .arg("--config")
        .arg(&file)
        .env("TRACELAKE_LISTEN_OTLP_GRPC", "127.0.0.1:4444")
        .env("TRACELAKE_FLUSH_MAX_AGE", "90s")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: toml::Table = toml::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap();
    let listen = printed["listen"].as_table().unwrap();
    assert_eq!(printed["data_dir"].as_str(), Some("/from-file")); // file over default
    assert_eq!(listen["http"].as_str(), Some("127.0.0.1:3333")); // flag over file
    assert_eq!(listen["otlp_grpc"].as_str(), Some("127.0.0.1:4444")); // env over file
    assert_eq!(listen["otlp_http"].as_str(), Some("0.0.0.0:4318")); // default
    assert_eq!(printed["wal"]["fsync"].as_str(), Some("interval"));
    assert_eq!(printed["flush"]["max_age"].as_str(), Some("1m 30s"));

    // The defaults alone need no file.
    let output = tracelake()
        .args(["serve", "--print-config"])
        .output()
        .unwrap();
    let printed: toml::Table = toml::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap();
    assert_eq!(printed["data_dir"].as_str(), Some("./tracelake-data"));
    assert_eq!(printed["storage"].as_str(), Some("file"));
}

#[test]
fn bad_config_is_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tracelake.toml");
    std::fs::write(&file, "[listen]\nhttpp = \"127.0.0.1:1\"\n").unwrap();
    let output = tracelake()
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("httpp"), "{stderr}");

    let output = tracelake()
        .args(["serve", "--wal-fsync", "sometimes"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("sometimes"));
}
