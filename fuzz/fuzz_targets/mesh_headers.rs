//! Fuzzes mock-mesh's parsing of the request headers MESH reads (mesh-protocol.md §4, §5.2, §7,
//! §8): the input is a list of `name: value` lines turned into a header map, then the send
//! headers, `Accept`, `Content-Encoding`, `Accept-Encoding` and `Mex-Chunk-Range` parsers run on
//! it. None may panic; an accepted chunk range always has 1 <= n <= N; accepted send headers have
//! a non-empty upper-case recipient and no control characters.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mock_mesh::headers::{
    accepts_gzip, parse_api_version, parse_chunk_range, parse_content_encoding, parse_send_headers,
    HeaderMap, HeaderName, HeaderValue,
};

fuzz_target!(|data: &[u8]| {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    let _ = parse_api_version(map.get("accept").map(|v| v.as_bytes()));
    let _ = parse_content_encoding(&map);
    let _ = accepts_gzip(&map);
    for v in map.values() {
        if let Ok(s) = v.to_str() {
            if let Some((n, total)) = parse_chunk_range(s) {
                assert!(1 <= n && n <= total);
            }
        }
    }
    if let Ok(h) = parse_send_headers(&map) {
        assert!(!h.to.is_empty());
        assert_eq!(h.to, h.to.to_ascii_uppercase());
        assert_eq!(h.chunk_range.0, 1);
        assert!(h.chunk_range.1 >= 1);
        for v in [&h.subject, &h.local_id, &h.file_name, &h.checksum]
            .into_iter()
            .flatten()
        {
            assert!(!v.bytes().any(|b| b < 0x20));
        }
    }
});
