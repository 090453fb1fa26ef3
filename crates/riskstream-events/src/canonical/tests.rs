use super::*;

/// The canonical-form cases of the Avro specification's test data
/// (apache/avro `share/test/data/schema-tests.txt`, cases 000–033): input, canonical form, and
/// the fingerprint where the file gives one (a Java `long`: the 64-bit Rabin value as i64).
const SPEC_CASES: &[(&str, &str, Option<i64>)] = &[
    (r#""null""#, r#""null""#, Some(7195948357588979594)),
    (r#"{"type":"null"}"#, r#""null""#, None),
    (r#""boolean""#, r#""boolean""#, Some(-6970731678124411036)),
    (r#"{"type":"boolean"}"#, r#""boolean""#, None),
    (r#""int""#, r#""int""#, Some(8247732601305521295)),
    (r#"{"type":"int"}"#, r#""int""#, None),
    (r#""long""#, r#""long""#, Some(-3434872931120570953)),
    (r#"{"type":"long"}"#, r#""long""#, None),
    (r#""float""#, r#""float""#, Some(5583340709985441680)),
    (r#"{"type":"float"}"#, r#""float""#, None),
    (r#""double""#, r#""double""#, Some(-8181574048448539266)),
    (r#"{"type":"double"}"#, r#""double""#, None),
    (r#""bytes""#, r#""bytes""#, Some(5746618253357095269)),
    (r#"{"type":"bytes"}"#, r#""bytes""#, None),
    (r#""string""#, r#""string""#, Some(-8142146995180207161)),
    (r#"{"type":"string"}"#, r#""string""#, None),
    (r#"[  ]"#, r#"[]"#, Some(-1241056759729112623)),
    (r#"[ "int"  ]"#, r#"["int"]"#, Some(-5232228896498058493)),
    (
        r#"[ "int" , {"type":"boolean"} ]"#,
        r#"["int","boolean"]"#,
        Some(5392556393470105090),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"foo"}"#,
        r#"{"name":"foo","type":"record","fields":[]}"#,
        Some(-4824392279771201922),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}"#,
        r#"{"name":"x.y.foo","type":"record","fields":[]}"#,
        Some(5916914534497305771),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}"#,
        r#"{"name":"a.b.foo","type":"record","fields":[]}"#,
        Some(-4616218487480524110),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"foo", "doc":"Useful info"}"#,
        r#"{"name":"foo","type":"record","fields":[]}"#,
        Some(-4824392279771201922),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"foo", "aliases":["foo","bar"]}"#,
        r#"{"name":"foo","type":"record","fields":[]}"#,
        Some(-4824392279771201922),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"foo", "doc":"foo", "aliases":["foo","bar"]}"#,
        r#"{"name":"foo","type":"record","fields":[]}"#,
        Some(-4824392279771201922),
    ),
    (
        r#"{"fields":[{"type":{"type":"boolean"}, "name":"f1"}], "type":"record", "name":"foo"}"#,
        r#"{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}"#,
        Some(7843277075252814651),
    ),
    (
        r#"{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":"true"},
            {"order":"descending","name":"f2","doc":"Hello","type":"int"}],
  "type":"record", "name":"foo"
}"#,
        r#"{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},{"name":"f2","type":"int"}]}"#,
        Some(-4860222112080293046),
    ),
    (
        r#"{"type":"enum", "name":"foo", "symbols":["A1"]}"#,
        r#"{"name":"foo","type":"enum","symbols":["A1"]}"#,
        Some(-6342190197741309591),
    ),
    (
        r#"{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}"#,
        r#"{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}"#,
        Some(-4448647247586288245),
    ),
    (
        r#"{"name":"foo","type":"fixed","size":15}"#,
        r#"{"name":"foo","type":"fixed","size":15}"#,
        Some(1756455273707447556),
    ),
    (
        r#"{"namespace":"x.y.z", "type":"fixed", "name":"foo", "doc":"foo bar", "size":32}"#,
        r#"{"name":"x.y.z.foo","type":"fixed","size":32}"#,
        Some(-3064184465700546786),
    ),
    (
        r#"{ "items":{"type":"null"}, "type":"array"}"#,
        r#"{"type":"array","items":"null"}"#,
        Some(-589620603366471059),
    ),
    (
        r#"{ "values":"string", "type":"map"}"#,
        r#"{"type":"map","values":"string"}"#,
        Some(-8732877298790414990),
    ),
    (
        r#"{"name":"PigValue","type":"record",
   "fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}"#,
        r#"{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}"#,
        Some(-1759257747318642341),
    ),
];

#[test]
fn the_specifications_canonical_form_cases() {
    for (i, (input, canonical, fp)) in SPEC_CASES.iter().enumerate() {
        let got = parsing_canonical_form(input).unwrap_or_else(|e| panic!("case {i:03}: {e}"));
        assert_eq!(&got, canonical, "case {i:03}");
        if let Some(fp) = fp {
            assert_eq!(
                rabin64(got.as_bytes()) as i64,
                *fp,
                "case {i:03} fingerprint"
            );
        }
    }
}

/// Logical types are attributes: the spec strips them (the cases apache-avro 0.22 gets wrong).
#[test]
fn logical_types_are_stripped() {
    let cases = [
        (
            r#"{"type":"long","logicalType":"timestamp-millis"}"#,
            r#""long""#,
        ),
        (r#"{"type":"int","logicalType":"date"}"#, r#""int""#),
        (
            r#"{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}"#,
            r#""bytes""#,
        ),
        (r#"{"type":"string","logicalType":"uuid"}"#, r#""string""#),
        (
            r#"{"type":"fixed","name":"d","size":8,"logicalType":"decimal","precision":9}"#,
            r#"{"name":"d","type":"fixed","size":8}"#,
        ),
        (
            r#"{"type":"record","name":"E","namespace":"n","fields":[
                {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"},"doc":"x"},
                {"name":"o","type":["null",{"type":"long","logicalType":"timestamp-micros"}],"default":null}]}"#,
            r#"{"name":"n.E","type":"record","fields":[{"name":"t","type":"long"},{"name":"o","type":["null","long"]}]}"#,
        ),
    ];
    for (input, canonical) in cases {
        assert_eq!(parsing_canonical_form(input).unwrap(), canonical, "{input}");
    }
    // The same fingerprint as the schema written without the logical type.
    assert_eq!(
        fingerprint(r#"{"type":"record","name":"E","fields":[{"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#).unwrap(),
        fingerprint(r#"{"type":"record","name":"E","fields":[{"name":"t","type":"long"}]}"#).unwrap()
    );
}

#[test]
fn nested_names_take_the_enclosing_namespace_and_repeat_as_references() {
    let input = r#"{"type":"record","name":"R","namespace":"a.b","fields":[
        {"name":"e","type":{"type":"enum","name":"E","symbols":["X"]}},
        {"name":"e2","type":"E"},
        {"name":"f","type":{"type":"fixed","name":"c.F","size":"04"}},
        {"name":"f2","type":{"type":"c.F"}},
        {"name":"s","type":{"type":"array","items":{"type":"record","name":"S","namespace":"","fields":[]}}}]}"#;
    assert_eq!(
        parsing_canonical_form(input).unwrap(),
        r#"{"name":"a.b.R","type":"record","fields":[{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["X"]}},{"name":"e2","type":"a.b.E"},{"name":"f","type":{"name":"c.F","type":"fixed","size":4}},{"name":"f2","type":"c.F"},{"name":"s","type":{"type":"array","items":{"name":"S","type":"record","fields":[]}}}]}"#
    );
}

#[test]
fn strings_keep_utf8_and_escape_only_what_json_requires() {
    assert_eq!(
        parsing_canonical_form(r#"{"type":"enum","name":"\u00e9t\u00e9","symbols":["A"]}"#)
            .unwrap(),
        "{\"name\":\"été\",\"type\":\"enum\",\"symbols\":[\"A\"]}"
    );
}

#[test]
fn not_a_schema_is_an_error_not_a_panic() {
    for bad in [
        "",
        "{",
        "{}",
        "42",
        r#"{"type":"record","name":"R"}"#,
        r#"{"type":"fixed","name":"F"}"#,
    ] {
        assert!(parsing_canonical_form(bad).is_err(), "{bad:?}");
    }
}
