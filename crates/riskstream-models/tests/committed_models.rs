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

#[test]
fn occlusion_through_the_explain_layer_matches_full_occlusion() {
    for slot in ["ato", "behavioral"] {
        let model = Model::load(&models_dir().join(slot), &input_index).unwrap();
        let k = model.input_names().len();
        let units = model.attribution_units();
        let fast = (0..units.len())
            .filter(|&u| model.occludes_through_layer(u))
            .count();
        assert_eq!(
            fast,
            units.len(),
            "{slot}: every input and group goes through the layer"
        );
        // Rows unlike the golden ones the load checked: those, each value scaled by a factor
        // in [0.5, 1.5]; every unit a candidate (the telemetry sequence group too).
        let golden: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(models_dir().join(slot).join("golden.json")).unwrap(),
        )
        .unwrap();
        let base: Vec<f32> = golden["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .enumerate()
            .map(|(i, v)| v * (1.0 + 0.5 * (i as f32 * 0.7).sin()))
            .collect();
        let n = base.len() / k;
        let mut base_scores = Vec::new();
        model.score_model_rows(&base, n, &mut base_scores).unwrap();
        let all: Vec<usize> = (0..units.len()).collect();
        let candidates = vec![all.clone(); n];
        let mut got = Vec::new();
        model
            .occluded_scores(&base, n, &candidates, &mut got)
            .unwrap();
        let mut occluded = Vec::new();
        for i in 0..n {
            for &u in &all {
                model.push_occluded(&base[i * k..(i + 1) * k], u, &mut occluded);
            }
        }
        let mut want = Vec::new();
        model
            .score_model_rows(&occluded, occluded.len() / k, &mut want)
            .unwrap();
        assert_eq!(got.len(), want.len());
        let moved = want
            .iter()
            .enumerate()
            .filter(|(i, w)| (**w - base_scores[i / all.len()]).abs() > 1e-3)
            .count();
        assert!(
            moved > n,
            "{slot}: occlusion moves scores ({moved} rows of {n})"
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() < 1e-4,
                "{slot} row {} unit {}: {g} through the layer, {w} in full",
                i / all.len(),
                units[all[i % all.len()]].0
            );
        }
    }
}

#[test]
fn an_explain_layer_that_does_not_cut_the_graph_or_is_absent_is_refused() {
    for (layer, why) in [
        // Not a cut of the graph (the raw features also reach the layers after it).
        ("/base/prep/Log", "refused"),
        // After the first layer: an input moves every column of its input.
        ("/base/net/net.1/Relu", "no input moves exactly one column"),
        ("no-such-node", "no-such-node"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        copy_model(dir.path());
        let path = dir.path().join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        m["explain_layer"] = serde_json::Value::String(layer.into());
        std::fs::write(&path, m.to_string()).unwrap();
        match Model::load(dir.path(), &input_index) {
            Err(e @ ModelError::ExplainLayer { .. }) => {
                assert!(e.to_string().contains(why), "{layer}: {e}")
            }
            Err(e) => panic!("{layer}: refused for another reason: {e}"),
            Ok(_) => panic!("{layer}: loaded"),
        }
    }
}
