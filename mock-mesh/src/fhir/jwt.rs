//! What every request to the NDOP FHIR API must carry (`ndop-fhir.md` §6): the Spine proxy
//! headers (`Ssp-TraceID` a UUID, `Ssp-From` and `Ssp-To` ASIDs, `Ssp-InteractionID`) and an
//! unsigned JWT (`Authorization: Bearer <jwt>`, or `Ssp-Authorization`) whose claims are checked:
//! all mandatory claims present, `aud` `https://clinicals.spineservices.nhs.uk`, not expired,
//! not issued in the future, at most 5 minutes long, and a `scope` that covers the interaction.
//!
//! The guide contradicts itself on the JWT (`alg` `none` in the text, `HS256` in its sample;
//! two spellings of the scope): both algorithms are accepted and no signature is checked, and
//! either scope spelling grants access. Refusals follow Spine's convention (the NDOP guide
//! documents none): 400 `BAD_REQUEST` for a missing or invalid header or claim, 403
//! `ACCESS_DENIED` for a scope that does not cover the interaction.

use http::HeaderMap;
use serde_json::Value;

use super::outcome::FhirError;

/// The audience every JWT must name.
pub(crate) const AUDIENCE: &str = "https://clinicals.spineservices.nhs.uk";
/// Prefix of every NDOP interaction id.
pub(crate) const INTERACTION_PREFIX: &str = "urn:nhs:names:services:nationaldataoptout:fhir:rest:";
/// The CapabilityStatement's interaction id (the only one the guide gives).
pub(crate) const METADATA_INTERACTION: &str =
    "urn:nhs:names:services:nationaldataoptout:fhir:rest:read:metadata";
/// Longest JWT lifetime (`exp - iat`) accepted, seconds.
const MAX_LIFETIME: i64 = 300;
/// Clock skew tolerated on `iat`, seconds.
const SKEW: i64 = 60;

/// What an interaction needs from the JWT's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// metadata: any valid JWT.
    Any,
    /// search, history, vread, read.
    Read,
    /// create.
    Create,
    /// update.
    Update,
}

/// Checks the Spine headers and the JWT. `metadata` = the CapabilityStatement request.
pub(crate) fn check(
    headers: &HeaderMap,
    metadata: bool,
    access: Access,
    now: i64,
) -> Result<(), FhirError> {
    let trace = header(headers, "ssp-traceid")?;
    if uuid::Uuid::parse_str(trace).is_err() {
        return Err(FhirError::bad_request(
            "Ssp-TraceID is not a UUID: send a new UUID with every request",
        ));
    }
    for name in ["ssp-from", "ssp-to"] {
        let v = header(headers, name)?;
        if v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FhirError::bad_request(format!(
                "{name} is not an ASID: send the system's accredited system id (digits only)"
            )));
        }
    }
    let interaction = header(headers, "ssp-interactionid")?;
    if metadata && interaction != METADATA_INTERACTION {
        return Err(FhirError::bad_request(format!(
            "Ssp-InteractionID does not match the request: the CapabilityStatement is \
             {METADATA_INTERACTION}"
        )));
    }
    if !metadata
        && (!interaction.starts_with(INTERACTION_PREFIX) || interaction == METADATA_INTERACTION)
    {
        return Err(FhirError::bad_request(format!(
            "Ssp-InteractionID does not match the request: a Consent interaction id starts \
             with {INTERACTION_PREFIX} and is not the metadata one"
        )));
    }
    let token = bearer(headers)?;
    let claims = decode(token)?;
    check_claims(&claims, access, now)
}

/// A mandatory header's value.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, FhirError> {
    match headers.get(name).map(|v| v.to_str()) {
        Some(Ok(v)) if !v.trim().is_empty() => Ok(v.trim()),
        Some(_) => Err(FhirError::bad_request(format!(
            "The {name} header is empty or not ASCII: send it on every request"
        ))),
        None => Err(FhirError::bad_request(format!(
            "The {name} header is missing: every request carries Ssp-TraceID, Ssp-From, \
             Ssp-To, Ssp-InteractionID and a JWT"
        ))),
    }
}

/// The JWT from `Authorization: Bearer …` or `Ssp-Authorization` (with or without `Bearer`).
fn bearer(headers: &HeaderMap) -> Result<&str, FhirError> {
    let raw = headers
        .get(http::header::AUTHORIZATION)
        .or_else(|| headers.get("ssp-authorization"))
        .ok_or_else(|| {
            FhirError::bad_request(
                "No JWT: send Authorization: Bearer <jwt> with a new unsigned JWT per request",
            )
        })?;
    let v = raw
        .to_str()
        .map_err(|_| FhirError::bad_request("The Authorization header is not ASCII"))?
        .trim();
    Ok(v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .unwrap_or(v)
        .trim())
}

/// The claims of a `header.payload.signature` token (the signature is not checked).
pub(crate) fn decode(token: &str) -> Result<Value, FhirError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [head, payload, _signature] = parts.as_slice() else {
        return Err(FhirError::bad_request(
            "The JWT is not three base64url parts separated by dots (an unsigned JWT ends with \
             a dot: header.payload.)",
        ));
    };
    let head: Value = b64_json(head)
        .ok_or_else(|| FhirError::bad_request("The JWT header is not base64url-encoded JSON"))?;
    match head.get("alg").and_then(Value::as_str) {
        Some("none" | "HS256") => {}
        _ => {
            return Err(FhirError::bad_request(
                "The JWT header's alg must be \"none\" (an unsigned JWT)",
            ))
        }
    }
    let claims: Value = b64_json(payload)
        .ok_or_else(|| FhirError::bad_request("The JWT payload is not base64url-encoded JSON"))?;
    if !claims.is_object() {
        return Err(FhirError::bad_request(
            "The JWT payload is not a JSON object",
        ));
    }
    Ok(claims)
}

fn check_claims(c: &Value, access: Access, now: i64) -> Result<(), FhirError> {
    for name in [
        "iss",
        "sub",
        "reason_for_request",
        "requesting_system",
        "scope",
    ] {
        match c.get(name).and_then(Value::as_str) {
            Some(s) if !s.is_empty() => {}
            _ => {
                return Err(FhirError::bad_request(format!(
                    "The JWT's {name} claim is missing or empty: it is mandatory"
                )))
            }
        }
    }
    if c.get("aud").and_then(Value::as_str) != Some(AUDIENCE) {
        return Err(FhirError::bad_request(format!(
            "The JWT's aud claim is missing or wrong: it must be {AUDIENCE}"
        )));
    }
    let (Some(exp), Some(iat)) = (
        c.get("exp").and_then(Value::as_i64),
        c.get("iat").and_then(Value::as_i64),
    ) else {
        return Err(FhirError::bad_request(
            "The JWT's exp and iat claims must be integers (seconds since the epoch)",
        ));
    };
    if exp <= now {
        return Err(FhirError::bad_request(
            "The JWT has expired (exp is in the past): make a new JWT for each request",
        ));
    }
    if iat > now + SKEW {
        return Err(FhirError::bad_request(
            "The JWT's iat claim is in the future: check the client's clock",
        ));
    }
    if exp - iat > MAX_LIFETIME {
        return Err(FhirError::bad_request(
            "The JWT's exp must be at most 5 minutes after its iat",
        ));
    }
    let scope = c.get("scope").and_then(Value::as_str).unwrap_or_default();
    let has = |words: &[&str]| scope.split_whitespace().any(|s| words.contains(&s));
    let ok = match access {
        Access::Any => true,
        Access::Read => has(&["patient/consent.read", "consent/*.read"]),
        Access::Create => has(&["patient/consent.write", "consent/*.create"]),
        Access::Update => has(&["patient/consent.write", "consent/*.update"]),
    };
    if !ok {
        let need = match access {
            Access::Read => "patient/consent.read",
            _ => "patient/consent.write",
        };
        return Err(FhirError::access_denied(format!(
            "The JWT's scope does not allow this interaction: it needs {need}"
        )));
    }
    Ok(())
}

/// Decodes base64url (padding optional) and parses it as JSON.
fn b64_json(s: &str) -> Option<Value> {
    serde_json::from_slice(&base64url(s)?).ok()
}

/// Decodes base64url without padding (padding tolerated).
fn base64url(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = c.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x)) << (8 * (3 - c.len()));
            for i in 0..=c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    fn token(claims: &str) -> String {
        format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(claims))
    }

    fn claims(exp: i64, scope: &str) -> String {
        format!(
            r#"{{"iss":"https://citizen-id.nhs.uk","sub":"x","aud":"{AUDIENCE}","exp":{exp},"iat":{},"reason_for_request":"patientaccess","scope":"{scope}","requesting_system":"https://fhir.nhs.uk/Id/accredited-system|200000000205"}}"#,
            exp - 300
        )
    }

    #[test]
    fn claims_are_checked() {
        let now = 1_700_000_000;
        let ok = decode(&token(&claims(now + 200, "patient/consent.read"))).unwrap();
        assert!(check_claims(&ok, Access::Read, now).is_ok());
        assert_eq!(
            check_claims(&ok, Access::Create, now).unwrap_err().status,
            403
        );
        let expired = decode(&token(&claims(now - 1, "patient/consent.read"))).unwrap();
        assert_eq!(
            check_claims(&expired, Access::Read, now).unwrap_err().spine,
            "BAD_REQUEST"
        );
        let wrong_aud = claims(now + 200, "patient/consent.read").replace(AUDIENCE, "https://x");
        let c = decode(&token(&wrong_aud)).unwrap();
        assert!(check_claims(&c, Access::Read, now)
            .unwrap_err()
            .diagnostics
            .contains("aud"));
        assert!(decode("abc").is_err());
        assert!(decode("a.b.c").is_err());
        assert_eq!(base64url("aGk").unwrap(), b"hi");
    }
}
