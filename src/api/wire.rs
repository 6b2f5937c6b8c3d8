//! Wire types of the answer of `get_key_values` and `group_get_key_values`
//! (the same shape), which the client decodes and the simulator encodes. The
//! request bodies belong to the kinds of message (`kind`).

use serde::{Deserialize, Serialize};

/// One pair in `ExtensionList`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePair {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value", default)]
    pub value: String,
    #[serde(rename = "Seq")]
    pub seq: i64,
}

/// A response. `ErrorCode` is required (a body without it is unparseable);
/// everything else may be missing, `ActionStatus` included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetKeyValuesResponse {
    #[serde(
        rename = "ActionStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub action_status: Option<String>,
    #[serde(rename = "ErrorCode")]
    pub error_code: i64,
    #[serde(rename = "ErrorInfo", default)]
    pub error_info: String,
    #[serde(
        rename = "CompleteFlag",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub complete_flag: Option<i64>,
    #[serde(rename = "LatestSeq", default, skip_serializing_if = "Option::is_none")]
    pub latest_seq: Option<i64>,
    #[serde(rename = "ClearSeq", default, skip_serializing_if = "Option::is_none")]
    pub clear_seq: Option<i64>,
    /// `None` when the answer has no `ExtensionList` at all (which an OK
    /// answer must have: see `fetch::pager::check_answer`).
    #[serde(
        rename = "ExtensionList",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub extension_list: Option<Vec<WirePair>>,
}

impl GetKeyValuesResponse {
    /// An error answer as the service gives it.
    pub fn error(code: i64, info: impl Into<String>) -> Self {
        GetKeyValuesResponse {
            action_status: Some("FAIL".into()),
            error_code: code,
            error_info: info.into(),
            complete_flag: None,
            latest_seq: None,
            clear_seq: None,
            extension_list: None,
        }
    }

    /// The pairs of the page (none when `ExtensionList` is missing).
    pub fn pairs(&self) -> &[WirePair] {
        self.extension_list.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_example_and_a_response_without_action_status() {
        let doc = r#"{"ErrorCode": 0,"ErrorInfo": "","ActionStatus": "OK","CompleteFlag": 1,"LatestSeq": 2,"ClearSeq": 0,"ExtensionList": [{"Key": "k1","Value": "v1","Seq": 1},{"Key": "k2","Value": "v2","Seq": 1},{"Key": "k3","Value": "v3","Seq": 2}]}"#;
        let r: GetKeyValuesResponse = serde_json::from_str(doc).unwrap();
        assert_eq!(r.error_code, 0);
        assert_eq!(r.complete_flag, Some(1));
        assert_eq!(r.latest_seq, Some(2));
        assert_eq!(r.pairs().len(), 3);
        assert_eq!(r.pairs()[2].key, "k3");

        let bare: GetKeyValuesResponse =
            serde_json::from_str(r#"{"ErrorCode":23004,"ErrorInfo":"no such message"}"#).unwrap();
        assert_eq!(bare.action_status, None);
        assert_eq!(bare.error_code, 23004);

        assert!(serde_json::from_str::<GetKeyValuesResponse>(r#"{"ActionStatus":"OK"}"#).is_err());
        assert!(serde_json::from_str::<GetKeyValuesResponse>("<html>502</html>").is_err());
    }
}
