//! Address lookup: `GET /messageexchange/endpointlookup/{ods_code}/{workflow_id}`
//! (section 5.12): which mailboxes of an organisation receive a workflow.

use serde::Deserialize;

use crate::{Error, MeshClient};

/// A mailbox found by [`MeshClient::lookup_endpoint`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Endpoint {
    /// The mailbox id (v2 `mailbox_id`, v1 `address`).
    #[serde(alias = "address")]
    pub mailbox_id: String,
    /// The mailbox's name (v2 `mailbox_name`, v1 `description`).
    #[serde(default, alias = "description")]
    pub mailbox_name: Option<String>,
}

#[derive(Deserialize)]
struct LookupResults {
    #[serde(default)]
    results: Vec<Endpoint>,
}

impl MeshClient {
    /// Mailboxes of organisation `ods` (ODS code, e.g. `X26`) registered to receive `workflow`;
    /// empty when there are none.
    pub async fn lookup_endpoint(&self, ods: &str, workflow: &str) -> Result<Vec<Endpoint>, Error> {
        let url = self.endpoint(&["endpointlookup", ods, workflow]);
        let found: LookupResults = self.get_json(&url).await?;
        Ok(found.results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2_bodies() {
        // E43
        let v2: LookupResults = serde_json::from_str(
            r#"{"results":[{"mailbox_id":"X26ABC2","mailbox_name":"TESTMB2"}]}"#,
        )
        .unwrap();
        let v1: LookupResults = serde_json::from_str(
            r#"{"query_id":"fe6b","results":[{"address":"X26ABC2","description":"TESTMB2","endpoint_type":"MESH"}]}"#,
        )
        .unwrap();
        assert_eq!(v1.results, v2.results);
        assert_eq!(v2.results[0].mailbox_id, "X26ABC2");
        assert_eq!(v2.results[0].mailbox_name.as_deref(), Some("TESTMB2"));
    }
}
