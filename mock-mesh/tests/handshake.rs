//! Over loopback HTTP with a real client (reqwest): the handshake, every authentication
//! failure, content negotiation, health, routing, endpoint lookup and workflow search
//! (`mesh-protocol.md` §3, §4, §5.1, §5.12–5.15).

mod common;
use common::*;

#[tokio::test]
async fn handshake_get_post_v1_v2_and_missing_headers() {
    let m = Mesh::default().await;
    let r = m.handshake(A).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.bytes().await.unwrap().is_empty(),
        "v2 handshake body is empty"
    );
    let r = m.handshake_as(A, V1).send().await.unwrap();
    assert_eq!(json(r).await, serde_json::json!({"mailboxId": A}));
    // GET works too, and the path mailbox is upper-cased
    let r = m
        .req(Method::GET, "/messageexchange/x26abc1", A)
        .header("mex-clientversion", "x")
        .header("mex-osname", "x")
        .header("mex-osversion", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // missing mex headers → FastAPI validation body listing each
    let r = m
        .req(Method::POST, "/messageexchange/X26ABC1", A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v = json(r).await;
    let locs: Vec<&str> = v["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["loc"][1].as_str().unwrap())
        .collect();
    assert_eq!(locs, ["mex-clientversion", "mex-osname", "mex-osversion"]);
    m.server.stop().await;
}

#[tokio::test]
async fn every_auth_failure_is_a_403_with_the_mesh_text() {
    let m = Mesh::default().await;
    let path = "/messageexchange/X26ABC1/inbox";
    let get = |auth: Option<String>, accept: &str| {
        let mut r = m.get(path).header("accept", accept);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let ts = m.clock.now().format("%Y%m%d%H%M").to_string();
    let bad_header = "Error reading from Authorization header";
    assert_v2_error(get(None, V2).await.unwrap(), 403, "", "", bad_header).await;
    assert_v1_error(get(None, V1).await.unwrap(), 403, "", "", bad_header).await;
    let r = get(Some("NHSMESH X26ABC1:only:three".into()), V2)
        .await
        .unwrap();
    assert_v2_error(r, 403, "", "", bad_header).await;
    let r = get(Some(m.token(B, "password")), V2).await.unwrap();
    assert_v2_error(r, 403, "", "", "Mailbox id does not match token").await;
    // unknown mailbox
    let r = m
        .get("/messageexchange/NOSUCH1/inbox")
        .header("authorization", m.token("NOSUCH1", "password"))
        .header("accept", V2)
        .send()
        .await
        .unwrap();
    assert_v2_error(r, 403, "SEND", "EPL-151", "No mailbox matched").await;
    let invalid = "Invalid Authentication Token";
    let r = get(Some(m.token(A, "wrong")), V2).await.unwrap();
    assert_v2_error(r, 403, "", "", invalid).await;
    let wrong_key = make_header("BackBone", A, "password", "n1", 0, &ts);
    assert_v2_error(
        get(Some(wrong_key), V2).await.unwrap(),
        403,
        "",
        "",
        invalid,
    )
    .await;
    // real MESH: a token is good for one request only…
    let once = m.token(A, "password");
    assert_eq!(
        get(Some(once.clone()), V2).await.unwrap().status(),
        StatusCode::OK
    );
    assert_v2_error(get(Some(once), V2).await.unwrap(), 403, "", "", invalid).await;
    // …and its timestamp must be within 2 hours of the server clock
    let old = (m.clock.now() - chrono::Duration::minutes(121))
        .format("%Y%m%d%H%M")
        .to_string();
    let stale = make_header("TestKey", A, "password", "n2", 0, &old);
    assert_v2_error(get(Some(stale), V2).await.unwrap(), 403, "", "", invalid).await;
    let near = (m.clock.now() - chrono::Duration::minutes(110))
        .format("%Y%m%d%H%M")
        .to_string();
    let fresh = make_header("TestKey", A, "password", "n3", 0, &near);
    assert_eq!(get(Some(fresh), V2).await.unwrap().status(), StatusCode::OK);
    m.server.stop().await;
}

#[tokio::test]
async fn sandbox_compatible_auth_switches() {
    let mut c = Config::default();
    c.auth.check_replay = false;
    c.auth.check_timestamp = false;
    let m = Mesh::start(c).await;
    let t = make_header("TestKey", A, "password", "n", 0, "202001010000");
    for _ in 0..2 {
        let r = m
            .get("/messageexchange/X26ABC1/inbox")
            .header("authorization", &t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "replayed, old token accepted");
    }
    m.server.stop().await;
    let mut c = Config::default();
    c.auth.enabled = false;
    let m = Mesh::start(c).await;
    let r = m
        .get("/messageexchange/X26ABC1/inbox")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = m.get("/messageexchange/NOSUCH/inbox").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    m.server.stop().await;
}

#[tokio::test]
async fn accept_header_health_routing() {
    let m = Mesh::default().await;
    let r = m
        .req_as(
            Method::GET,
            "/messageexchange/X26ABC1/inbox",
            A,
            "application/vnd.mesh.v2+json, application/json",
        )
        .send()
        .await
        .unwrap();
    assert_v1_error(r, 400, "", "", "Accept header api format incorrect").await;
    for p in [
        "/health",
        "/_status",
        "/_ping",
        "/healthcheck",
        "/messageexchange/_ping",
    ] {
        let r = m.get(p).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{p}");
        assert_eq!(json(r).await["status"], "running");
    }
    let r = m.get("/nope").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(r).await, serde_json::json!({"detail": "Not Found"}));
    let r = m
        .http
        .delete(m.url("/messageexchange/X26ABC1/inbox"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        json(r).await,
        serde_json::json!({"detail": "Method Not Allowed"})
    );
    let r = m
        .req(Method::POST, "/messageexchange/X26ABC1/update", A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    m.server.stop().await;
}

#[tokio::test]
async fn endpoint_lookup_and_workflow_search() {
    let m = Mesh::default().await;
    let r = m
        .get("/messageexchange/endpointlookup/X26/TEST_WORKFLOW")
        .header("accept", V2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(r).await,
        serde_json::json!({"results": [{"mailbox_id": B, "mailbox_name": "TESTMB2"}]})
    );
    let r = m
        .get("/messageexchange/endpointlookup/X26/TEST_WORKFLOW")
        .send()
        .await
        .unwrap();
    let v = json(r).await;
    assert_eq!(v["results"][0]["address"], B);
    assert_eq!(v["results"][0]["endpoint_type"], "MESH");
    assert!(v["query_id"].is_string());
    let r = m
        .get("/messageexchange/workflowsearch/SPINE_NTT_UPHOLDING")
        .send()
        .await
        .unwrap();
    let found: Vec<String> = json(r).await["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["mailbox_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(found, [POS_INT, POS_LIVE]);
    let r = m
        .get("/messageexchange/endpointlookup/ZZZ/TEST_WORKFLOW")
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["results"], serde_json::json!([]));
    m.server.stop().await;
}
