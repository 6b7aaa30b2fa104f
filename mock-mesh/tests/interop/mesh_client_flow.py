#!/usr/bin/env python3
"""Drives NHS England's official MESH client (PyPI `mesh-client`, 5.0.2) through the whole MESH
flow against a running server, e.g. mock-mesh:

    python mesh_client_flow.py http://127.0.0.1:8700

Handshake, single and chunked send (plain and gzip), inbox listing and paging, download whole and
by chunk, acknowledge, tracking, endpoint lookup, the error paths (wrong password, wrong shared
key, unknown message, unregistered recipient) and the POS workflow. Prints `PASS name` or
`FAIL name: reason` per check and `N passed, M failed` last; exits 0 only if every check passed.
Run by mock-mesh's integration tests (`cargo test -p mock-mesh`) with the venv made by
tools/python-env.sh.
"""

import json
import sys
import time
import traceback
import uuid

import requests
from mesh_client import MeshClient, MeshError

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8700"
KEY = b"TestKey"
SENDER, RECIPIENT = "X26ABC1", "X26ABC2"
WORKFLOW = "TEST_WORKFLOW"
RUN = uuid.uuid4().hex[:8]

results = []


def client(mailbox, password="password", key=KEY, **kw):
    return MeshClient(URL, mailbox, password, shared_key=key, max_retries=0, timeout=30, **kw)


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"PASS {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
            reason = f"{type(e).__name__}: {e}"
            results.append((name, reason))
            print(f"FAIL {name}: {reason}", flush=True)
            traceback.print_exc(file=sys.stderr)
        return fn

    return wrap


def expect_status(fn, status):
    try:
        fn()
    except requests.HTTPError as e:
        assert e.response.status_code == status, f"HTTP {e.response.status_code}, expected {status}"
        return e.response
    raise AssertionError(f"no error, expected HTTP {status}")


def wait_inbox(c, want, timeout=10.0):
    deadline = time.time() + timeout
    while True:
        ids = list(c.iterate_message_ids())
        if all(w in ids for w in want) or time.time() > deadline:
            return ids
        time.sleep(0.05)


sender, recipient = client(SENDER), client(RECIPIENT)
state = {}
SMALL = f"Hello Bob, run {RUN}\n".encode()
CHUNKED = b"".join(b"line %06d of a chunked message\n" % i for i in range(200))  # 6,600 bytes


@check("ping_and_handshake")
def _():
    assert sender.ping()["status"] == "running"
    assert sender.handshake() == b"hello"
    assert recipient.handshake() == b"hello"


@check("send_single_message")
def _():
    state["small"] = sender.send_message(
        RECIPIENT,
        SMALL,
        workflow_id=WORKFLOW,
        subject="greeting",
        local_id=f"single-{RUN}",
        filename="hello.txt",
        checksum="md5:deadbeef",
        content_type="text/plain",
        partner_id="partner",
    )


@check("send_chunked_message_3_chunks")
def _():
    state["chunked"] = sender.send_message(
        RECIPIENT, CHUNKED, max_chunk_size=2500, workflow_id=WORKFLOW, local_id=f"chunked-{RUN}"
    )


@check("send_gzip_chunked_message")
def _():
    state["gzip"] = sender.send_message(
        RECIPIENT, CHUNKED * 3, max_chunk_size=5000, compress=True, workflow_id=WORKFLOW
    )


@check("tracking_accepted")
def _():
    for key in ("small", "chunked", "gzip"):
        t = sender.track_message(state[key])
        assert t["status"] == "accepted", t
        assert t["message_id"] == state[key]
    assert sender.track_message(state["small"])["local_id"] == f"single-{RUN}"


@check("inbox_lists_and_pages")
def _():
    ids = wait_inbox(recipient, [state["small"], state["chunked"], state["gzip"]])
    assert ids[:3] == [state["small"], state["chunked"], state["gzip"]], ids
    assert recipient.list_messages(max_results=10)[:3] == ids[:3]
    assert recipient.list_messages(workflow_filter="NOT_THIS_ONE") == []
    assert list(recipient.iterate_message_ids(batch_size=10)) == ids
    assert recipient.count_messages() == len(ids)


@check("download_single_message")
def _():
    msg = recipient.retrieve_message(state["small"])
    assert msg.read() == SMALL
    assert msg.sender == SENDER and msg.recipient == RECIPIENT
    assert msg.workflow_id == WORKFLOW
    assert msg.local_id == f"single-{RUN}"
    assert msg.subject == "greeting"
    assert msg.filename == "hello.txt"
    assert msg.message_type == "DATA"
    assert msg.mex_header("content-checksum") == "md5:deadbeef"
    assert msg.mex_header("partnerid") == "partner"
    assert msg.content_type.startswith("text/plain"), msg.content_type
    assert msg.id() == state["small"]


@check("download_chunked_by_chunk")
def _():
    got = b""
    for n in (1, 2, 3):
        r = recipient.retrieve_message_chunk(state["chunked"], n)
        assert r.status_code == (206 if n < 3 else 200), (n, r.status_code)
        assert r.headers["Mex-Chunk-Range"] == f"{n}:3"
        got += r.content
    assert got == CHUNKED


@check("download_chunked_with_mesh_client")
def _():
    assert recipient.retrieve_message(state["chunked"]).read() == CHUNKED
    assert recipient.retrieve_message(state["gzip"]).read() == CHUNKED * 3


@check("acknowledge_and_gone")
def _():
    for key in ("small", "chunked", "gzip"):
        recipient.acknowledge_message(state[key])
    ids = list(recipient.iterate_message_ids())
    assert not {state["small"], state["chunked"], state["gzip"]} & set(ids), ids
    assert sender.track_message(state["small"])["status"] == "acknowledged"
    # real MESH: an acknowledged message cannot be downloaded again
    expect_status(lambda: recipient.retrieve_message(state["small"]), 410)


@check("context_manager_acknowledges")
def _():
    mid = sender.send_message(RECIPIENT, b"ctx", workflow_id=WORKFLOW)
    with recipient.retrieve_message(mid) as msg:
        assert msg.read() == b"ctx"
    assert sender.track_message(mid)["status"] == "acknowledged"


@check("endpoint_lookup")
def _():
    res = sender.lookup_endpoint("X26", WORKFLOW)["results"]
    assert [r["mailbox_id"] for r in res] == [RECIPIENT], res


@check("negative_wrong_password_403")
def _():
    expect_status(client(SENDER, password="wrong").handshake, 403)


@check("negative_wrong_shared_key_403")
def _():
    expect_status(client(SENDER, key=b"BackBone").handshake, 403)


@check("negative_unknown_message_404")
def _():
    expect_status(lambda: recipient.retrieve_message("20200101000000000000_ABCDEF"), 404)
    expect_status(lambda: sender.track_message("20200101000000000000_ABCDEF"), 404)


@check("negative_unregistered_recipient_417")
def _():
    try:
        sender.send_message("X26NOPE9", b"x", workflow_id=WORKFLOW)
    except MeshError as e:
        assert "Unregistered to address" in str(e), e
        return
    raise AssertionError("no MeshError")


@check("pos_int_test_patients")
def _():
    patients = [line.split(",") for line in open(sys.argv[2]).read().splitlines()[1:]] if len(sys.argv) > 2 else []
    assert patients, "pass testdata/test-patients.csv as the second argument"
    int_ = [(n, out == "yes") for env, n, out in patients if env == "int"]
    body = "".join(f"{n},\r\n" for n, _ in int_).encode()
    want = "".join(f"{n},\r\n" for n, out in int_ if not out).encode()
    local_id = f"NDOP-{RUN}"
    sub = sender.send_message("X26OT154", body, workflow_id="SPINE_NTT_UPHOLDING", local_id=local_id, subject=local_id)
    replies = []
    deadline = time.time() + 10
    while len(replies) < 2 and time.time() < deadline:
        for mid in sender.iterate_message_ids():
            msg = sender.retrieve_message(mid)
            if msg.local_id == local_id:
                replies.append((msg.subject, msg.read()))
                msg.acknowledge()
        time.sleep(0.05)
    assert len(replies) == 2, replies
    (job_subject, job), (_, result) = replies
    assert job_subject == "SUCCESS"
    job = json.loads(job)
    assert job["status"] == "pending" and job["metadata"]["request"]["extra"]["message_id"] == sub
    assert result == want, result
    assert sender.track_message(sub)["status"] == "acknowledged"


failed = [r for r in results if r[1]]
print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
