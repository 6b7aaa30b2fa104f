//! Criterion benchmarks of mock-mesh (the whole-run comparison with mesh-sandbox is
//! `src/bin/mesh_load.rs`; figures in docs/PERFORMANCE.md).
//!
//! * `mock_mesh/app/handshake`: one authenticated handshake through the routing function
//!   (`App::handle`), no socket: parsing, HMAC check, replay check, response.
//! * `mock_mesh/loopback/handshake`: the same over a keep-alive loopback HTTP connection.
//! * `mock_mesh/loopback/{memory,disk}_send_download_ack/10MB`: send a 10 MB message, download it,
//!   acknowledge it (Throughput::Bytes = bytes uploaded); the disk store fsyncs before its 202.
//!
//! Run: `cargo bench -p ndop-benches --bench mock_mesh`

// criterion_group! defines an undocumented `pub fn`; a bench target has no API to document.
#![allow(missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use mock_mesh::{Config, MockMesh};

const KEY: &str = "TestKey";

fn token(mailbox: &str) -> String {
    let ts = chrono::Utc::now().format("%Y%m%d%H%M").to_string();
    let nonce = uuid::Uuid::new_v4().to_string();
    mock_mesh::auth::make_header(KEY, mailbox, "password", &nonce, 0, &ts)
}

fn handshake_request() -> http::Request<Full<Bytes>> {
    http::Request::post("/messageexchange/X26ABC1")
        .header("authorization", token("X26ABC1"))
        .header("accept", "application/vnd.mesh.v2+json")
        .header("mex-clientversion", "bench==1")
        .header("mex-osname", "Linux")
        .header("mex-osversion", "6")
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

fn app(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mesh = rt
        .block_on(MockMesh::start(Config::default()))
        .expect("start");
    let app = mesh.app().clone();
    let mut g = c.benchmark_group("mock_mesh/app");
    g.throughput(Throughput::Elements(1));
    g.bench_function("handshake", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = app.handle(handshake_request()).await;
                assert_eq!(r.status(), 200);
                r.into_body().collect().await.expect("body");
            })
        })
    });
    g.finish();
    rt.block_on(mesh.stop());
}

async fn send_download_ack(http: &reqwest::Client, base: &str, body: Bytes) {
    let v2 = "application/vnd.mesh.v2+json";
    let r = http
        .post(format!("{base}/messageexchange/X26ABC1/outbox"))
        .header("authorization", token("X26ABC1"))
        .header("accept", v2)
        .header("mex-to", "X26ABC2")
        .header("mex-workflowid", "TEST_WORKFLOW")
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.expect("json");
    let id = v["message_id"].as_str().expect("id").to_string();
    let got = http
        .get(format!("{base}/messageexchange/X26ABC2/inbox/{id}"))
        .header("authorization", token("X26ABC2"))
        .header("accept", v2)
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("body");
    assert_eq!(got.len(), body.len());
    let r = http
        .put(format!(
            "{base}/messageexchange/X26ABC2/inbox/{id}/status/acknowledged"
        ))
        .header("authorization", token("X26ABC2"))
        .header("accept", v2)
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), 200);
}

fn loopback(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let memory = rt
        .block_on(MockMesh::start(Config::default()))
        .expect("start");
    let disk = rt
        .block_on(MockMesh::start(
            Config::default().with_store_dir(dir.path()),
        ))
        .expect("start");
    let http = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client");
    let mut g = c.benchmark_group("mock_mesh/loopback");
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    let base = memory.base_url();
    g.bench_function("handshake", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = http
                    .post(format!("{base}/messageexchange/X26ABC1"))
                    .header("authorization", token("X26ABC1"))
                    .header("accept", "application/vnd.mesh.v2+json")
                    .header("mex-clientversion", "bench==1")
                    .header("mex-osname", "Linux")
                    .header("mex-osversion", "6")
                    .send()
                    .await
                    .expect("handshake");
                assert_eq!(r.status(), 200);
            })
        })
    });
    let size = 10_000_000usize;
    let mut data = vec![0u8; size];
    rand::Rng::fill(&mut rand::thread_rng(), &mut data[..]);
    let data = Bytes::from(data);
    g.sample_size(20);
    g.throughput(Throughput::Bytes(size as u64));
    for (name, server) in [("memory", &memory), ("disk", &disk)] {
        let base = server.base_url();
        g.bench_with_input(
            BenchmarkId::new(format!("{name}_send_download_ack"), "10MB"),
            &data,
            |b, data| b.iter(|| rt.block_on(send_download_ack(&http, &base, data.clone()))),
        );
    }
    g.finish();
    rt.block_on(memory.stop());
    rt.block_on(disk.stop());
}

criterion_group!(benches, app, loopback);
criterion_main!(benches);
