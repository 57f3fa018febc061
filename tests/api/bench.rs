//! `beepmyphone bench` against an in-process relay: short runs lose nothing, report every field,
//! and clean up their devices. Timing figures are never asserted here (machines are noisy).

use clap::Parser;
use serde_json::Value;

use beepmyphone::bench::{self, BenchArgs};

use crate::helpers::{spawn_app, TestApp};

/// Runs the bench on a blocking thread (it runs its own worker threads) so the in-process relay
/// keeps serving; returns the exit code and the JSON report.
async fn bench(app: &TestApp, extra: &[&str]) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut line: Vec<String> = vec![
        "bench".into(),
        "--server".into(),
        app.address.clone(),
        "--token".into(),
        app.admin_token.clone(),
        "--threads".into(),
        "2".into(),
        "--drain-seconds".into(),
        "30".into(),
        "--pid".into(),
        std::process::id().to_string(),
        "--json".into(),
        json.display().to_string(),
    ];
    line.extend(extra.iter().map(|s| (*s).to_owned()));
    let code = tokio::task::spawn_blocking(move || {
        let args = BenchArgs::try_parse_from(line).expect("flags parse");
        bench::main(args)
    })
    .await
    .unwrap();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (code, report)
}

fn assert_report_shape(report: &Value) {
    for key in [
        "scenario",
        "run_id",
        "settings",
        "ok",
        "counts",
        "throughput",
        "latency_us",
        "latency_from_send_us",
        "publish_response_us",
        "connect_us",
        "connections",
        "frames",
        "errors",
        "rss",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}: {report}");
    }
    for key in ["count", "p50", "p90", "p99", "p999", "max"] {
        assert!(report["latency_us"][key].is_u64(), "latency_us.{key}");
        assert!(report["connect_us"][key].is_u64(), "connect_us.{key}");
    }
    for key in ["accepted_per_second", "delivered_per_second"] {
        assert!(report["throughput"][key].is_number(), "throughput.{key}");
    }
    for key in ["frames_per_notification", "bytes_per_notification"] {
        assert!(report["frames"][key].is_number(), "frames.{key}");
    }
    assert!(report["rss"]["end_kb"].is_u64(), "RSS read with --pid");
}

async fn assert_devices_deleted(app: &TestApp) {
    let (status, body) = app
        .get("/api/v1/devices?limit=500", Some(&app.admin_token))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 0, "{body}");
}

#[actix_web::test]
async fn a_short_throughput_run_loses_nothing_and_reports_every_field() {
    let app = spawn_app().await;
    let (code, report) = bench(
        &app,
        &[
            "throughput",
            "--devices",
            "4",
            "--count",
            "300",
            "--publishers",
            "2",
            "--concurrency",
            "4",
        ],
    )
    .await;
    assert_eq!(code, 0, "{report}");
    assert_report_shape(&report);
    assert_eq!(report["scenario"], "throughput");
    assert_eq!(report["ok"], true);
    let counts = &report["counts"];
    assert_eq!(counts["published"], 300, "{report}");
    assert_eq!(counts["accepted"], 300, "{report}");
    assert_eq!(counts["delivered"], 300, "{report}");
    assert_eq!(counts["lost"], 0, "{report}");
    assert_eq!(counts["duplicates"], 0, "{report}");
    assert_eq!(report["connections"]["established"], 4);
    assert_eq!(report["latency_us"]["count"], 300);
    assert!(report["frames"]["notification_frames"].as_u64().unwrap() >= 1);
    assert_devices_deleted(&app).await;
}

#[actix_web::test]
async fn a_batched_backlog_flows_to_devices_that_connect_later() {
    let app = spawn_app().await;
    let (code, report) = bench(
        &app,
        &[
            "backlog",
            "--devices",
            "3",
            "--count",
            "240",
            "--batch",
            "40",
        ],
    )
    .await;
    assert_eq!(code, 0, "{report}");
    assert_report_shape(&report);
    assert_eq!(report["counts"]["accepted"], 240, "{report}");
    assert_eq!(report["counts"]["delivered"], 240, "{report}");
    assert_eq!(report["counts"]["lost"], 0, "{report}");
    assert!(
        report["backlog"]["last_received_ms"].is_number(),
        "{report}"
    );
    assert_devices_deleted(&app).await;
}

#[actix_web::test]
async fn an_open_loop_run_keeps_a_schedule() {
    let app = spawn_app().await;
    let (code, report) = bench(
        &app,
        &[
            "latency",
            "--devices",
            "5",
            "--rate",
            "400",
            "--count",
            "200",
            "--burst",
            "5",
        ],
    )
    .await;
    assert_eq!(code, 0, "{report}");
    assert_report_shape(&report);
    assert_eq!(report["settings"]["pacing"], "open");
    assert_eq!(report["counts"]["lost"], 0, "{report}");
    assert_eq!(report["counts"]["delivered"], 200, "{report}");
    assert_eq!(report["schedule"]["send_lag_us"]["count"], 200, "{report}");
}

#[actix_web::test]
async fn paced_publishers_wait_for_each_answer_and_every_reception_has_its_second() {
    let app = spawn_app().await;
    // Two publishers, one request in flight each: the shape of HTTP client libraries.
    let (code, report) = bench(
        &app,
        &[
            "latency",
            "--devices",
            "4",
            "--rate",
            "300",
            "--count",
            "150",
            "--publishers",
            "2",
            "--concurrency",
            "1",
        ],
    )
    .await;
    assert_eq!(code, 0, "{report}");
    assert_report_shape(&report);
    assert_eq!(report["settings"]["concurrency"], 1, "{report}");
    assert_eq!(report["counts"]["delivered"], 150, "{report}");
    assert_eq!(report["counts"]["lost"], 0, "{report}");
    let seconds = report["seconds"].as_array().expect("seconds");
    let received: u64 = seconds
        .iter()
        .map(|s| s["received"].as_u64().unwrap())
        .sum();
    assert_eq!(
        received, 150,
        "every reception in the second it was meant for: {report}"
    );
    let at: Vec<u64> = seconds.iter().map(|s| s["at"].as_u64().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
    // 150 at 300/s is half a second of schedule: the first second or the first two.
    assert!(at.first() == Some(&0) && at.len() <= 2, "{at:?}");
    assert_devices_deleted(&app).await;
}

#[actix_web::test]
async fn paced_connects_start_on_their_schedule() {
    let app = spawn_app().await;
    let (code, report) = bench(
        &app,
        &[
            "connections",
            "--devices",
            "6",
            "--connect-rate",
            "50",
            "--duration",
            "0",
        ],
    )
    .await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["connections"]["established"], 6, "{report}");
    // The sixth connect starts 5 / 50 s after the first: set-up cannot take less.
    let setup = report["connections"]["setup_seconds"].as_f64().unwrap();
    assert!(setup >= 0.1, "{setup} s for 6 connects paced at 50/s");
}
