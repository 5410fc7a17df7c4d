//! The line-protocol encoder against a real InfluxDB 1.6 (Debian `influxdb`): measurement
//! names, tag keys and values and string fields full of commas, spaces, `=`, quotes,
//! backslashes and unicode are written with `LineBuilder` and read back exactly with InfluxQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use meshmon_aggregator::sinks::influxdb::line_protocol::{LineBuilder, LineError};
use meshmon_tests::influxdb::InfluxDb;

const NASTY: [&str; 8] = [
    "a,b",
    "two words",
    "k=v",
    r#"say "hi""#,
    r"back\slash and C:\path\x",
    "ünïcødé € 𝄞 日本",
    r#"all: a,b c=d "e" \f ü"#,
    "tag:team=a%3Db%2Cc%25",
];

#[test]
fn tricky_names_and_values_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = InfluxDb::start(dir.path()).unwrap();
    db.create_database("lp").unwrap();
    let measurement = "m, with space";
    let mut body = String::new();
    for (i, v) in NASTY.iter().enumerate() {
        let line = LineBuilder::new(measurement)
            .unwrap()
            .tag("k,e y=", v)
            .unwrap()
            .tag("i", &i.to_string())
            .unwrap()
            .string("s", v)
            .unwrap()
            .float("f", i as f64)
            .unwrap()
            .int("n", i as i64)
            .unwrap()
            .finish(1_000 + i as i64)
            .unwrap();
        body.push_str(&line);
        body.push('\n');
    }
    let (status, text) = db.write("lp", &body).unwrap();
    assert_eq!(status, 204, "{text}\n{body}");

    let answer = db.query(Some("lp"), r#"SELECT * FROM "m, with space""#).unwrap();
    let rows = InfluxDb::rows(&answer);
    assert_eq!(rows.len(), NASTY.len(), "{answer}");
    for (i, (row, v)) in rows.iter().zip(NASTY).enumerate() {
        assert_eq!(row["time"], serde_json::json!(1_000 + i as i64), "{row:?}");
        assert_eq!(row["k,e y="].as_str(), Some(v), "tag value {i}: {row:?}");
        assert_eq!(row["s"].as_str(), Some(v), "string field {i}: {row:?}");
        assert_eq!(row["f"].as_f64(), Some(i as f64));
        assert_eq!(row["n"].as_i64(), Some(i as i64));
    }
    // The field types are as written: f float (even 0.0, 1.0), n integer.
    let keys = db.query(Some("lp"), "SHOW FIELD KEYS").unwrap();
    let types: Vec<(String, String)> = InfluxDb::rows(&keys)
        .iter()
        .map(|r| (r["fieldKey"].as_str().unwrap().into(), r["fieldType"].as_str().unwrap().into()))
        .collect();
    assert_eq!(types, [("f".into(), "float".into()), ("n".into(), "integer".into()), ("s".into(), "string".into())]);
    // Each nasty value selects its own point by tag.
    for (i, v) in NASTY.iter().enumerate() {
        let literal = v.replace('\\', r"\\").replace('\'', r"\'");
        let q = format!(r#"SELECT n FROM "m, with space" WHERE "k,e y=" = '{literal}'"#);
        let rows = InfluxDb::rows(&db.query(Some("lp"), &q).unwrap());
        assert_eq!(rows.len(), 1, "{q}");
        assert_eq!(rows[0]["n"].as_i64(), Some(i as i64), "{q}");
    }
    // What cannot be written is refused before it reaches the server.
    assert!(matches!(LineBuilder::new("m").unwrap().tag("k", "line\nbreak"), Err(LineError::ControlChar { .. })));
}
