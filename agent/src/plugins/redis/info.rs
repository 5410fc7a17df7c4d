//! The text of Redis `INFO`: `# Section` headers, `key:value` lines, and the structured values
//! of the keyspace (`db0:keys=3,expires=1,avg_ttl=0`) and of a master's replicas
//! (`slave0:ip=…,port=…,state=online,offset=…,lag=…`). Pure.

use std::collections::HashMap;

use crate::plugins::PluginError;

/// One database of the keyspace section.
#[derive(Debug, Clone, PartialEq)]
pub struct DbStats {
    /// The database number (`db3` → 3).
    pub db: u32,
    /// Keys.
    pub keys: Option<f64>,
    /// Keys with an expiry.
    pub expires: Option<f64>,
    /// Average time to live of the keys with an expiry, milliseconds (0 when unknown).
    pub avg_ttl_ms: Option<f64>,
}

/// One replica as its master lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// `ip:port`.
    pub address: String,
    /// The replication offset the replica acknowledged.
    pub offset: Option<f64>,
    /// Seconds since its last acknowledgement.
    pub lag_seconds: Option<f64>,
}

/// A parsed `INFO` reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    /// `key:value` fields of every section except the keyspace and the replica lines.
    pub fields: HashMap<String, String>,
    /// The keyspace section, by database number.
    pub keyspace: Vec<DbStats>,
    /// A master's replicas (`slaveN` lines), in their order.
    pub replicas: Vec<Replica>,
}

/// `a=1,b=2` → pairs.
fn pairs(value: &str) -> impl Iterator<Item = (&str, &str)> {
    value.split(',').filter_map(|kv| kv.split_once('='))
}

impl Info {
    /// Parses the text of an `INFO` reply.
    ///
    /// # Errors
    /// [`PluginError`] (`protocol`) when the text has no section header or no field at all —
    /// it is not an `INFO` reply.
    pub fn parse(text: &str) -> Result<Info, PluginError> {
        let mut info = Info::default();
        let mut section = String::new();
        let mut headers = 0usize;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(name) = line.strip_prefix('#') {
                section = name.trim().to_ascii_lowercase();
                headers += 1;
                continue;
            }
            let Some((key, value)) = line.split_once(':') else { continue };
            if section == "keyspace"
                && let Some(db) = key.strip_prefix("db").and_then(|n| n.parse::<u32>().ok())
            {
                let mut stats = DbStats { db, keys: None, expires: None, avg_ttl_ms: None };
                for (k, v) in pairs(value) {
                    let v = v.parse::<f64>().ok().filter(|v| v.is_finite());
                    match k {
                        "keys" => stats.keys = v,
                        "expires" => stats.expires = v,
                        "avg_ttl" => stats.avg_ttl_ms = v,
                        _ => {}
                    }
                }
                info.keyspace.push(stats);
                continue;
            }
            if section == "replication"
                && key.strip_prefix("slave").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            {
                let (mut ip, mut port, mut offset, mut lag) = ("", "", None, None);
                for (k, v) in pairs(value) {
                    match k {
                        "ip" => ip = v,
                        "port" => port = v,
                        "offset" => offset = v.parse::<f64>().ok().filter(|v| v.is_finite()),
                        "lag" => lag = v.parse::<f64>().ok().filter(|v| v.is_finite()),
                        _ => {}
                    }
                }
                info.replicas.push(Replica { address: format!("{ip}:{port}"), offset, lag_seconds: lag });
                continue;
            }
            info.fields.insert(key.to_owned(), value.to_owned());
        }
        if headers == 0 || (info.fields.is_empty() && info.keyspace.is_empty()) {
            let start: String = text.chars().take(80).collect();
            return Err(PluginError::protocol(format!("not an INFO reply: {start:?}")));
        }
        info.keyspace.sort_by_key(|d| d.db);
        Ok(info)
    }

    /// Field `key` as a finite number.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.fields.get(key)?.trim().parse::<f64>().ok().filter(|v| v.is_finite())
    }

    /// Field `key` as text.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(|s| s.trim())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::plugins::ErrorReason;

    const SAMPLE: &str = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc\r\nuptime_in_seconds:42\r\n\r\n\
        # Memory\r\nused_memory:1000\r\nmem_fragmentation_ratio:1.5\r\nweird:not a number\r\n\r\n\
        # Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
        slave0:ip=10.0.0.2,port=6380,state=online,offset=90,lag=1\r\nmaster_repl_offset:100\r\n\r\n\
        # Keyspace\r\ndb10:keys=7,expires=0,avg_ttl=0\r\ndb0:keys=3,expires=2,avg_ttl=5000\r\n";

    #[test]
    fn parses_fields_keyspace_and_replicas() {
        let info = Info::parse(SAMPLE).unwrap();
        assert_eq!(info.text("run_id"), Some("abc"));
        assert_eq!(info.number("uptime_in_seconds"), Some(42.0));
        assert_eq!(info.number("mem_fragmentation_ratio"), Some(1.5));
        assert_eq!(info.number("weird"), None);
        assert_eq!(info.number("missing"), None);
        assert_eq!(
            info.keyspace,
            [
                DbStats { db: 0, keys: Some(3.0), expires: Some(2.0), avg_ttl_ms: Some(5000.0) },
                DbStats { db: 10, keys: Some(7.0), expires: Some(0.0), avg_ttl_ms: Some(0.0) },
            ]
        );
        assert_eq!(
            info.replicas,
            [Replica { address: "10.0.0.2:6380".into(), offset: Some(90.0), lag_seconds: Some(1.0) }]
        );
        assert!(!info.fields.contains_key("slave0"));
        assert!(!info.fields.contains_key("db0"));
    }

    #[test]
    fn text_that_is_not_info_is_a_protocol_error() {
        for bad in ["", "hello", "key:value\r\n", "# Server\r\n"] {
            assert_eq!(Info::parse(bad).unwrap_err().reason, ErrorReason::Protocol, "{bad:?}");
        }
        // Garbage inside a valid reply is skipped, not fatal.
        let info = Info::parse("# Keyspace\r\ndb0:keys=x,expires=1\r\ndbx:keys=1\r\n# Stats\r\nnocolon\r\n").unwrap();
        assert_eq!(info.keyspace, [DbStats { db: 0, keys: None, expires: Some(1.0), avg_ttl_ms: None }]);
        assert_eq!(info.fields.get("dbx").map(String::as_str), Some("keys=1"));
    }
}
