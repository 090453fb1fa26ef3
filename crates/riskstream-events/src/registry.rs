//! A minimal Confluent-compatible schema-registry client: look up a schema by id, register
//! a schema under a subject. Results are cached for the life of the process; the network is
//! touched only on a cache miss (first sight of an id, first write to a subject).
//!
//! Calls block: callers run them off async worker threads (the pipeline decodes in a
//! blocking task).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// A schema-registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `url` and `why` with the URL's password hidden ([`crate::log_ids::scrub`]).
    #[error("schema registry {url}: {why}")]
    Http { url: String, why: String },
    #[error("schema registry {url}: unreadable response: {why}")]
    BadResponse { url: String, why: String },
}

/// How the subject our output schemas are registered under is named: Confluent's subject name
/// strategies. Choose what the consumers' deserializers expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectStrategy {
    /// `<topic>-value` (Confluent's `TopicNameStrategy`, the default): one schema per topic.
    #[default]
    Topic,
    /// `<record full name>`, e.g. `riskstream.v1.Verdict` (`RecordNameStrategy`): one subject per
    /// record type, across topics.
    Record,
    /// `<topic>-<record full name>` (`TopicRecordNameStrategy`): several record types per topic.
    TopicRecord,
}

impl SubjectStrategy {
    /// The accepted spellings, for errors and help.
    pub const NAMES: &'static str = "topic, record, topic-record";

    pub fn parse(s: &str) -> Option<SubjectStrategy> {
        match s {
            "topic" => Some(SubjectStrategy::Topic),
            "record" => Some(SubjectStrategy::Record),
            "topic-record" => Some(SubjectStrategy::TopicRecord),
            _ => None,
        }
    }

    /// The subject for a `record` (full name) written to `topic`.
    pub fn subject(self, topic: &str, record: &str) -> String {
        match self {
            SubjectStrategy::Topic => format!("{topic}-value"),
            SubjectStrategy::Record => record.to_string(),
            SubjectStrategy::TopicRecord => format!("{topic}-{record}"),
        }
    }
}

fn http_error(url: &str, why: &str) -> RegistryError {
    RegistryError::Http {
        url: crate::log_ids::redact_url(url),
        why: crate::log_ids::scrub(why, url),
    }
}

fn bad_response(url: &str, why: &str) -> RegistryError {
    RegistryError::BadResponse {
        url: crate::log_ids::redact_url(url),
        why: crate::log_ids::scrub(why, url),
    }
}

/// Client for one registry base URL (e.g. `http://registry:8081`).
pub struct RegistryClient {
    base: String,
    agent: ureq::Agent,
    schemas_by_id: Mutex<HashMap<u32, String>>,
    ids_by_subject: Mutex<HashMap<String, u32>>,
}

#[derive(serde::Deserialize)]
struct SchemaById {
    schema: String,
}

#[derive(serde::Deserialize)]
struct Registered {
    id: u32,
}

impl RegistryClient {
    pub fn new(base_url: &str) -> Self {
        RegistryClient {
            base: base_url.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build(),
            schemas_by_id: Mutex::new(HashMap::new()),
            ids_by_subject: Mutex::new(HashMap::new()),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The schema text registered under `id` (`GET /schemas/ids/{id}`).
    pub fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        if let Some(s) = self
            .schemas_by_id
            .lock()
            .expect("registry cache poisoned")
            .get(&id)
        {
            return Ok(s.clone());
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let body = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| http_error(&url, &e.to_string()))?
            .into_string()
            .map_err(|e| bad_response(&url, &e.to_string()))?;
        let parsed: SchemaById =
            serde_json::from_str(&body).map_err(|e| bad_response(&url, &e.to_string()))?;
        self.schemas_by_id
            .lock()
            .expect("registry cache poisoned")
            .insert(id, parsed.schema.clone());
        Ok(parsed.schema)
    }

    /// Registers `schema` under `subject` (idempotent on the registry side) and returns its id
    /// (`POST /subjects/{subject}/versions`).
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        if let Some(id) = self
            .ids_by_subject
            .lock()
            .expect("registry cache poisoned")
            .get(subject)
        {
            return Ok(*id);
        }
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = serde_json::json!({ "schema": schema }).to_string();
        let resp = self
            .agent
            .post(&url)
            .set("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send_string(&body)
            .map_err(|e| http_error(&url, &e.to_string()))?
            .into_string()
            .map_err(|e| bad_response(&url, &e.to_string()))?;
        let parsed: Registered =
            serde_json::from_str(&resp).map_err(|e| bad_response(&url, &e.to_string()))?;
        self.ids_by_subject
            .lock()
            .expect("registry cache poisoned")
            .insert(subject.to_string(), parsed.id);
        self.schemas_by_id
            .lock()
            .expect("registry cache poisoned")
            .insert(parsed.id, schema.to_string());
        Ok(parsed.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_password_never_reaches_an_error() {
        // A port nothing listens on: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = RegistryClient::new(&format!("http://svc:s3cretpw@127.0.0.1:{port}"));
        let err = client.schema_by_id(1).unwrap_err();
        let said = format!("{err} {err:?}");
        assert!(!said.contains("s3cretpw"), "{said}");
        assert!(said.contains("svc:***@127.0.0.1"), "{said}");
        let err = client.register("t-value", "\"long\"").unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cretpw"));
    }
}
