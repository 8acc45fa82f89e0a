//! What a mapping row keeps beside its ids, in its `metadata` column: the worker's digests of
//! the last record exported and imported, and what the connector asked to keep (a version
//! token). Three crates write it; this type is the one shape they share.
//!
//! The stored JSON is flat, as it has always been: `{"hash": …, "import_hash": …,
//! "sync_token": …}`. Absent parts are left out, so the store's merge (`old || new`) keeps
//! what the other direction wrote.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingMeta {
    /// Digest of the payload last exported: equal digest, nothing to send.
    #[serde(rename = "hash", default, skip_serializing_if = "Option::is_none")]
    pub export_hash: Option<String>,
    /// Digest of the ERP record last imported: equal digest, nothing to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_hash: Option<String>,
    /// The connector's own keys (e.g. QuickBooks' `sync_token`), handed back to it on the
    /// next export of the record.
    #[serde(flatten)]
    pub connector: serde_json::Map<String, serde_json::Value>,
}

impl MappingMeta {
    /// What an export records: the payload's digest and the connector's keys.
    pub fn exported(hash: String, connector: serde_json::Map<String, serde_json::Value>) -> Self {
        Self {
            export_hash: Some(hash),
            import_hash: None,
            connector,
        }
    }

    /// What an import records: the ERP record's digest.
    pub fn imported(hash: String) -> Self {
        Self {
            import_hash: Some(hash),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mapping_metadata_keeps_its_stored_flat_shape() {
        let stored = json!({"hash": "h1", "import_hash": "h2", "sync_token": "7"});
        let meta: MappingMeta = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(meta.export_hash.as_deref(), Some("h1"));
        assert_eq!(meta.import_hash.as_deref(), Some("h2"));
        assert_eq!(meta.connector.get("sync_token"), Some(&json!("7")));
        assert_eq!(serde_json::to_value(&meta).unwrap(), stored);
    }

    #[test]
    fn absent_parts_are_left_out_so_a_merge_keeps_the_other_directions() {
        let mut connector = serde_json::Map::new();
        connector.insert("sync_token".into(), json!("3"));
        assert_eq!(
            serde_json::to_value(MappingMeta::exported("h".into(), connector)).unwrap(),
            json!({"hash": "h", "sync_token": "3"})
        );
        assert_eq!(
            serde_json::to_value(MappingMeta::imported("i".into())).unwrap(),
            json!({"import_hash": "i"})
        );
        let empty: MappingMeta = serde_json::from_value(json!({})).unwrap();
        assert_eq!(empty, MappingMeta::default());
    }
}
