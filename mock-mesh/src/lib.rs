//! Mock MESH server. Filled in by the mock-mesh issue.
