//! MESH API client. Filled in by the mesh-client issue.
