//! The committed model artifacts (`models/`) load in tract, match their golden outputs within
//! 1e-5 (checked by `Model::load`), and broken models are refused with a clear error.

use std::path::{Path, PathBuf};

use riskstream_features::inputs::{input_index, N_INPUTS};
use riskstream_models::{Model, ModelError, PLAN_BATCH_SIZES};

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

#[test]
fn committed_models_load_and_match_goldens() {
    for slot in ["behavioral", "ato"] {
        let model = Model::load(&models_dir().join(slot), &input_index)
            .expect("committed models load and pass golden parity");
        assert_eq!(model.name(), slot);
    }
}

#[test]
fn sequence_inputs_are_one_attribution_unit() {
    let model = Model::load(&models_dir().join("behavioral"), &input_index).unwrap();
    let units = model.attribution_units();
    let seq: Vec<_> = units
        .iter()
        .filter(|(label, _)| *label == "telemetry_sequence")
        .collect();
    assert_eq!(seq.len(), 1);
    assert_eq!(seq[0].1.len(), 48 * 5);
    let covered: usize = units.iter().map(|(_, m)| m.len()).sum();
    assert_eq!(covered, model.input_names().len());
}

#[test]
fn batch_size_does_not_change_scores() {
    for slot in ["ato", "behavioral"] {
        batch_size_does_not_change_scores_of(slot);
    }
}

fn batch_size_does_not_change_scores_of(slot: &str) {
    let model = Model::load(&models_dir().join(slot), &input_index).unwrap();
    // Deterministic pseudo-random rows.
    let n = 300;
    let rows: Vec<f32> = (0..n * N_INPUTS)
        .map(|i| ((i * 7919) % 1000) as f32 / 250.0)
        .collect();
    let mut all = Vec::new();
    model.score(&rows, N_INPUTS, n, &mut all).unwrap();
    assert_eq!(all.len(), n);
    for &b in PLAN_BATCH_SIZES.iter().chain([3usize, 17, 65].iter()) {
        let mut one_by_one = Vec::new();
        let mut i = 0;
        while i < n {
            let take = b.min(n - i);
            model
                .score(
                    &rows[i * N_INPUTS..(i + take) * N_INPUTS],
                    N_INPUTS,
                    take,
                    &mut one_by_one,
                )
                .unwrap();
            i += take;
        }
        for (a, c) in all.iter().zip(&one_by_one) {
            assert!((a - c).abs() < 1e-5, "batch {b}: {a} vs {c}");
        }
    }
    assert!(all.iter().all(|s| (0.0..=1.0).contains(s)));
}

fn copy_model(to: &Path) {
    for f in ["manifest.json", "model.onnx", "golden.json"] {
        std::fs::copy(models_dir().join("ato").join(f), to.join(f)).unwrap();
    }
}

#[test]
fn unknown_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    let text = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    std::fs::write(
        dir.path().join("manifest.json"),
        text.replace("acct_logins_24h", "acct_shoe_size"),
    )
    .unwrap();
    match Model::load(dir.path(), &input_index) {
        Err(ModelError::UnknownInput { input, .. }) => assert_eq!(input, "acct_shoe_size"),
        other => panic!("expected UnknownInput, got {:?}", other.err()),
    }
}

#[test]
fn corrupt_onnx_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    std::fs::write(dir.path().join("model.onnx"), b"not a model").unwrap();
    assert!(matches!(
        Model::load(dir.path(), &input_index),
        Err(ModelError::Tract { .. })
    ));
}

#[test]
fn golden_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    let mut golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("golden.json")).unwrap())
            .unwrap();
    let first = golden["outputs"][0].as_f64().unwrap();
    golden["outputs"][0] = serde_json::json!(first + 0.01);
    std::fs::write(dir.path().join("golden.json"), golden.to_string()).unwrap();
    assert!(matches!(
        Model::load(dir.path(), &input_index),
        Err(ModelError::Golden { .. })
    ));
}
