//! What serves and decides, and its hot reload.
//!
//! A [`Serving`] is one immutable snapshot: the loaded models, which of them score an event
//! (the slot's champion and shadow challengers, or those of the first matching route) and
//! the decision [`Policy`]. It is read from `<models>/serving.toml` (the committed default is
//! built in) and the model directories that file names.
//!
//! [`ServingHandle`] holds the current snapshot behind an `ArcSwap`: the scorer takes it once
//! per batch, so a reload lands between batches and a batch never mixes versions. A reload
//! (file change, polled; or SIGHUP) builds a complete new snapshot off the async threads,
//! reusing models whose files did not change; a model that fails to load, fails its goldens
//! or names another slot is rejected, logged and counted, and its previous version keeps
//! serving (a model the configuration names for the first time has none: the whole new
//! configuration is rejected instead).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use riskstream_events::{Event, TransactionKind};
use riskstream_models::{Model, ModelError, Slot};
use serde::Deserialize;
use tokio::sync::watch;

use crate::metrics as m;
use crate::policy::{Policy, PolicyConfig, PolicyError};

/// The serving file inside the models directory.
pub const SERVING_FILE: &str = "serving.toml";

/// Used when the models directory has no `serving.toml`: the committed one.
pub const DEFAULT_SERVING: &str = include_str!("../../../models/serving.toml");

/// `serving.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingConfig {
    pub slots: SlotsConfig,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Absent: the built-in policy (the committed `models/serving.toml`'s).
    pub policy: Option<PolicyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsConfig {
    pub behavioral: TargetConfig,
    pub ato: TargetConfig,
}

/// The models scoring an event: one champion (decides) and any shadows (logged only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Model directory under the models directory.
    pub champion: String,
    #[serde(default)]
    pub shadows: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    pub slot: Slot,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub countries: Vec<String>,
    #[serde(default)]
    pub vendors: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(flatten)]
    pub target: TargetConfig,
}

impl ServingConfig {
    pub fn parse(text: &str) -> Result<ServingConfig, ServingError> {
        toml::from_str(text).map_err(|e| ServingError::Config(e.to_string()))
    }

    pub fn policy(&self) -> Result<Policy, PolicyError> {
        match &self.policy {
            Some(p) => Policy::new(p),
            None => ServingConfig::parse(DEFAULT_SERVING)
                .ok()
                .and_then(|d| d.policy)
                .map_or(Err(PolicyError::NoRules), |p| Policy::new(&p)),
        }
    }

    fn slot_target(&self, slot: Slot) -> &TargetConfig {
        match slot {
            Slot::Behavioral => &self.slots.behavioral,
            Slot::Ato => &self.slots.ato,
        }
    }

    /// Every (slot, model directory) the configuration names, each once; a directory named
    /// for two slots is an error.
    fn model_dirs(&self) -> Result<Vec<(Slot, String)>, ServingError> {
        let mut out: Vec<(Slot, String)> = Vec::new();
        let targets = Slot::ALL
            .iter()
            .map(|&s| (s, self.slot_target(s)))
            .chain(self.routes.iter().map(|r| (r.slot, &r.target)));
        for (slot, t) in targets {
            for dir in std::iter::once(&t.champion).chain(&t.shadows) {
                match out.iter().find(|(_, d)| d == dir) {
                    Some((s, _)) if *s != slot => {
                        return Err(ServingError::SlotConflict {
                            dir: dir.clone(),
                            first: s.as_str(),
                            second: slot.as_str(),
                        })
                    }
                    Some(_) => {}
                    None => out.push((slot, dir.clone())),
                }
            }
        }
        Ok(out)
    }
}

/// Why a serving snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("serving config: {0}")]
    Config(String),
    #[error("serving config: {0}")]
    Policy(#[from] PolicyError),
    #[error("model directory `{dir}` is named for slots `{first}` and `{second}`")]
    SlotConflict {
        dir: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("route `{route}`: unknown transaction kind `{kind}`")]
    UnknownKind { route: String, kind: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A loaded model and the state of its files when it was loaded.
pub struct LoadedModel {
    pub dir: String,
    pub model: Model,
    files: FilesPrint,
}

/// Models scoring one event: indices into [`Serving::models`].
#[derive(Debug, Clone)]
pub struct Target {
    /// The route's name, or `default`.
    pub route: String,
    pub champion: usize,
    pub shadows: Vec<usize>,
}

struct Route {
    slot: Slot,
    regions: Vec<String>,
    countries: Vec<String>,
    vendors: Vec<String>,
    kinds: Vec<TransactionKind>,
    target: Target,
}

/// One immutable snapshot of what serves and decides.
pub struct Serving {
    pub models: Vec<Arc<LoadedModel>>,
    defaults: [Target; 2],
    routes: Vec<Route>,
    pub policy: Policy,
    /// The serving file's state when this snapshot was built.
    config_print: FilePrint,
}

impl Serving {
    /// The models scoring `event`.
    pub fn target(&self, event: &Event) -> &Target {
        let (slot, region, country, vendor, kind) = match event {
            Event::CaptureSession(c) => (
                Slot::Behavioral,
                &c.region,
                &c.country,
                Some(&c.vendor.vendor),
                None,
            ),
            Event::Transaction(t) => (Slot::Ato, &t.region, &t.country, None, Some(t.kind)),
        };
        for r in &self.routes {
            if r.slot == slot
                && (r.regions.is_empty() || r.regions.contains(region))
                && (r.countries.is_empty() || r.countries.contains(country))
                && (r.vendors.is_empty() || vendor.is_some_and(|v| r.vendors.contains(v)))
                && (r.kinds.is_empty() || kind.is_some_and(|k| r.kinds.contains(&k)))
            {
                return &r.target;
            }
        }
        &self.defaults[slot as usize]
    }

    /// The slot's default champion (routes may choose others).
    pub fn champion(&self, slot: Slot) -> &Model {
        self.model(self.defaults[slot as usize].champion)
    }

    pub fn model(&self, index: usize) -> &Model {
        &self.models[index].model
    }

    /// Every target (defaults first, then routes), for metrics and logs.
    pub fn targets(&self) -> impl Iterator<Item = (Slot, &Target)> {
        Slot::ALL
            .iter()
            .map(|&s| (s, &self.defaults[s as usize]))
            .chain(self.routes.iter().map(|r| (r.slot, &r.target)))
    }

    /// Builds a snapshot from `dir`, reusing `previous`'s models whose files are unchanged
    /// (unless `force`: then every model is loaded and validated again) and keeping
    /// `previous`'s version of any model that fails to load. Returns the snapshot
    /// and the models rejected on the way. Blocking (tract compiles plans): not on async threads.
    fn build(
        dir: &Path,
        column_of: &dyn Fn(&str) -> Option<usize>,
        previous: Option<&Serving>,
        force: bool,
    ) -> Result<(Serving, Vec<(String, ModelError)>), ServingError> {
        let config_path = dir.join(SERVING_FILE);
        let config_print = FilePrint::of(&config_path);
        let text = match std::fs::read_to_string(&config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT_SERVING.to_string(),
            Err(e) => {
                return Err(ServingError::Config(format!(
                    "{}: {e}",
                    config_path.display()
                )))
            }
        };
        let config = ServingConfig::parse(&text)?;
        let policy = config.policy()?;
        let dirs = config.model_dirs()?;
        let mut models: Vec<Arc<LoadedModel>> = Vec::with_capacity(dirs.len());
        let mut rejected = Vec::new();
        for (slot, name) in &dirs {
            let path = dir.join(name);
            let files = FilesPrint::of(&path);
            let old = previous.and_then(|p| p.models.iter().find(|m| &m.dir == name));
            if let Some(old) = old.filter(|o| o.files == files && !force) {
                models.push(old.clone());
                continue;
            }
            let loaded = Model::load(&path, column_of).and_then(|model| {
                if model.name() == slot.as_str() {
                    Ok(model)
                } else {
                    Err(ModelError::WrongSlot {
                        path: path.clone(),
                        model: model.name().to_string(),
                        slot: slot.as_str().to_string(),
                    })
                }
            });
            match (loaded, old) {
                (Ok(model), _) => models.push(Arc::new(LoadedModel {
                    dir: name.clone(),
                    model,
                    files,
                })),
                (Err(e), old) => {
                    // Counted here, whether the old version stays or the reload is refused.
                    metrics::counter!(m::MODEL_RELOADS, "model" => name.clone(), "outcome" => "rejected")
                        .increment(1);
                    match old {
                        Some(old) => {
                            rejected.push((name.clone(), e));
                            models.push(old.clone());
                        }
                        None => return Err(e.into()),
                    }
                }
            }
        }
        let index = |d: &String| dirs.iter().position(|(_, x)| x == d).expect("listed");
        let target = |route: &str, t: &TargetConfig| {
            let champion = index(&t.champion);
            let shadows: Vec<usize> = t.shadows.iter().map(index).collect();
            Target {
                route: route.to_string(),
                champion,
                shadows,
            }
        };
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let kinds = r
                    .kinds
                    .iter()
                    .map(|k| {
                        TransactionKind::parse(k).ok_or_else(|| ServingError::UnknownKind {
                            route: r.name.clone(),
                            kind: k.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Route {
                    slot: r.slot,
                    regions: r.regions.clone(),
                    countries: r.countries.clone(),
                    vendors: r.vendors.clone(),
                    kinds,
                    target: target(&r.name, &r.target),
                })
            })
            .collect::<Result<Vec<_>, ServingError>>()?;
        Ok((
            Serving {
                defaults: [
                    target("default", &config.slots.behavioral),
                    target("default", &config.slots.ato),
                ],
                routes,
                models,
                policy,
                config_print,
            },
            rejected,
        ))
    }

    /// The state of every file this snapshot was built from (serving file, model directories).
    fn print(&self, dir: &Path) -> (FilePrint, Vec<FilesPrint>) {
        (
            FilePrint::of(&dir.join(SERVING_FILE)),
            self.models
                .iter()
                .map(|m| FilesPrint::of(&dir.join(&m.dir)))
                .collect(),
        )
    }
}

/// A file's (modified time, length), `None` if absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FilePrint(Option<(SystemTime, u64)>);

impl FilePrint {
    fn of(path: &Path) -> FilePrint {
        FilePrint(
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())),
        )
    }
}

/// The state of a model directory's files (manifest, ONNX file, goldens).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FilesPrint(Vec<FilePrint>);

impl FilesPrint {
    fn of(dir: &Path) -> FilesPrint {
        let manifest = dir.join("manifest.json");
        let mut files = vec![FilePrint::of(&manifest)];
        // The manifest names the other files; read it to find them (unreadable: manifest only).
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            if let Ok(m) = serde_json::from_str::<riskstream_models::Manifest>(&text) {
                files.push(FilePrint::of(&dir.join(&m.onnx)));
                files.push(FilePrint::of(&dir.join(&m.golden)));
            }
        }
        FilesPrint(files)
    }
}

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new snapshot serves; `rejected` models kept their previous version.
    Applied { rejected: Vec<String> },
    /// Nothing changed on disk.
    Unchanged,
    /// The new configuration could not be built; the previous snapshot keeps serving.
    Rejected(String),
}

/// The current snapshot, and how to replace it.
pub struct ServingHandle {
    dir: PathBuf,
    column_of: fn(&str) -> Option<usize>,
    current: ArcSwap<Serving>,
    /// Serializes reloads (the poller and SIGHUP may ask at once).
    reloading: Mutex<()>,
}

impl ServingHandle {
    /// Loads the first snapshot; any error is fatal (nothing would serve).
    pub fn load(
        dir: &Path,
        column_of: fn(&str) -> Option<usize>,
    ) -> Result<ServingHandle, ServingError> {
        let (serving, rejected) = Serving::build(dir, &column_of, None, false)?;
        debug_assert!(rejected.is_empty());
        publish_active(None, &serving);
        Ok(ServingHandle {
            dir: dir.to_path_buf(),
            column_of,
            current: ArcSwap::from_pointee(serving),
            reloading: Mutex::new(()),
        })
    }

    /// The snapshot to use for one batch.
    pub fn current(&self) -> Arc<Serving> {
        self.current.load_full()
    }

    /// Rebuilds from disk and swaps the result in; `force` (SIGHUP) reloads and re-validates
    /// every model even if its files look unchanged (same modification time and size).
    /// Blocking: call from `spawn_blocking` (see [`ServingHandle::watch`]).
    pub fn reload(&self, force: bool) -> ReloadOutcome {
        let _guard = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.current.load_full();
        let unchanged = previous.config_print == FilePrint::of(&self.dir.join(SERVING_FILE))
            && previous
                .models
                .iter()
                .all(|m| m.files == FilesPrint::of(&self.dir.join(&m.dir)));
        if unchanged && !force {
            return ReloadOutcome::Unchanged;
        }
        match Serving::build(&self.dir, &self.column_of, Some(&previous), force) {
            Ok((serving, rejected)) => {
                for (dir, e) in &rejected {
                    tracing::error!(model = %dir, error = %e, "model rejected; its previous version keeps serving");
                }
                for lm in &serving.models {
                    if !previous.models.iter().any(|p| Arc::ptr_eq(p, lm)) {
                        tracing::info!(model = %lm.dir, version = lm.model.version(), "model loaded");
                        metrics::counter!(m::MODEL_RELOADS, "model" => lm.dir.clone(), "outcome" => "loaded")
                            .increment(1);
                    }
                }
                publish_active(Some(&previous), &serving);
                self.current.store(Arc::new(serving));
                metrics::counter!(m::SERVING_RELOADS, "outcome" => "applied").increment(1);
                ReloadOutcome::Applied {
                    rejected: rejected.into_iter().map(|(d, _)| d).collect(),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "serving reload rejected; the previous configuration keeps serving");
                metrics::counter!(m::SERVING_RELOADS, "outcome" => "rejected").increment(1);
                ReloadOutcome::Rejected(e.to_string())
            }
        }
    }

    /// Reloads when the files change (checked every `poll`; a change must be stable for one
    /// poll, so a directory being copied in is not loaded half-written) and on SIGHUP (at once).
    /// `poll == 0` turns polling off (SIGHUP still works). Ends at shutdown.
    pub fn watch(
        self: Arc<Self>,
        poll: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut hup =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGHUP");
                        None
                    }
                };
            // `seen`: the files at the last poll; `attempted`: the files the last reload saw
            // (a rejected change is not retried until the files change again).
            let mut seen = self.current().print(&self.dir);
            let mut attempted = seen.clone();
            let mut tick = tokio::time::interval(if poll.is_zero() {
                Duration::from_secs(3600)
            } else {
                poll
            });
            tick.tick().await;
            loop {
                let force = tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tick.tick(), if !poll.is_zero() => false,
                    Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                };
                let now = self.current().print(&self.dir);
                if force {
                    tracing::info!("SIGHUP: reloading models and serving config");
                } else {
                    let stable = now == seen;
                    seen = now.clone();
                    if !stable || now == attempted {
                        continue; // unchanged, or still changing (being copied in): wait
                    }
                }
                let me = self.clone();
                match tokio::task::spawn_blocking(move || me.reload(force)).await {
                    Ok(ReloadOutcome::Unchanged) => {}
                    Ok(outcome) => tracing::info!(?outcome, "serving reload"),
                    Err(e) => tracing::error!(error = %e, "serving reload task failed"),
                }
                attempted = self.current().print(&self.dir);
                seen = attempted.clone();
            }
        })
    }
}

/// Sets `riskstream_model_active` to 1 for every (slot, route, role, model, version) of `now`
/// and to 0 for those of `before` that are gone.
fn publish_active(before: Option<&Serving>, now: &Serving) {
    let rows = |s: &Serving| -> Vec<[String; 5]> {
        let mut rows = Vec::new();
        for (slot, t) in s.targets() {
            let champion = std::iter::once(("champion", t.champion));
            for (role, i) in champion.chain(t.shadows.iter().map(|&i| ("shadow", i))) {
                rows.push([
                    slot.as_str().to_string(),
                    t.route.clone(),
                    role.to_string(),
                    s.models[i].dir.clone(),
                    s.models[i].model.version().to_string(),
                ]);
            }
        }
        rows
    };
    let new = rows(now);
    let gauge = |r: &[String; 5], v: f64| {
        metrics::gauge!(m::MODEL_ACTIVE, "slot" => r[0].clone(), "route" => r[1].clone(), "role" => r[2].clone(), "model" => r[3].clone(), "version" => r[4].clone()).set(v);
    };
    if let Some(before) = before {
        for r in rows(before) {
            if !new.contains(&r) {
                gauge(&r, 0.0);
            }
        }
    }
    for r in &new {
        gauge(r, 1.0);
    }
}

/// Model directories for tests: copies of the committed models.
#[cfg(test)]
pub(crate) mod test_models {
    use std::path::{Path, PathBuf};

    /// The committed models directory.
    pub(crate) fn committed() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
    }

    /// A models directory with copies of committed models (`dirs`: (from, to)) and, if
    /// given, a serving file.
    pub(crate) fn copy(dirs: &[(&str, &str)], serving: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (from, to) in dirs {
            std::fs::create_dir_all(dir.path().join(to)).unwrap();
            for f in ["manifest.json", "model.onnx", "golden.json"] {
                let (src, dst) = (committed().join(from).join(f), dir.path().join(to).join(f));
                std::fs::copy(src, dst).unwrap();
            }
        }
        if let Some(s) = serving {
            std::fs::write(dir.path().join(super::SERVING_FILE), s).unwrap();
        }
        dir
    }

    /// Rewrites the version in a model directory's manifest.
    pub(crate) fn set_version(dir: &Path, version: &str) {
        let p = dir.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        m["version"] = serde_json::json!(version);
        std::fs::write(&p, m.to_string()).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::test_models::{copy as models, set_version};
    use super::*;
    use riskstream_features::inputs::input_index;

    const BOTH: [(&str, &str); 2] = [("behavioral", "behavioral"), ("ato", "ato")];

    fn ato_version(h: &ServingHandle) -> String {
        h.current().champion(Slot::Ato).version().to_string()
    }

    #[test]
    fn without_a_serving_file_the_built_in_default_serves() {
        let dir = models(&BOTH, None);
        let h = ServingHandle::load(dir.path(), input_index).unwrap();
        assert_eq!(h.current().models.len(), 2);
        assert!(matches!(h.reload(false), ReloadOutcome::Unchanged));
    }

    #[test]
    fn a_changed_model_is_swapped_in_and_unchanged_ones_are_reused() {
        let dir = models(&BOTH, None);
        let h = ServingHandle::load(dir.path(), input_index).unwrap();
        let before = h.current();
        set_version(&dir.path().join("ato"), "9.0.0");
        assert!(
            matches!(h.reload(false), ReloadOutcome::Applied { ref rejected } if rejected.is_empty())
        );
        assert_eq!(ato_version(&h), "9.0.0");
        let after = h.current();
        let behavioral = |s: &Serving| {
            s.models
                .iter()
                .find(|m| m.dir == "behavioral")
                .unwrap()
                .clone()
        };
        assert!(
            Arc::ptr_eq(&behavioral(&before), &behavioral(&after)),
            "unchanged model reused"
        );
        // The old snapshot is untouched: a batch holding it finishes on the old version.
        assert_ne!(before.champion(Slot::Ato).version(), "9.0.0");
    }

    #[test]
    fn a_broken_model_is_rejected_and_the_previous_version_keeps_serving() {
        let dir = models(&BOTH, None);
        let h = ServingHandle::load(dir.path(), input_index).unwrap();
        let old = ato_version(&h);
        std::fs::write(dir.path().join("ato/model.onnx"), b"not onnx").unwrap();
        set_version(&dir.path().join("ato"), "9.0.0-broken");
        match h.reload(false) {
            ReloadOutcome::Applied { rejected } => assert_eq!(rejected, vec!["ato".to_string()]),
            other => panic!("{other:?}"),
        }
        assert_eq!(ato_version(&h), old);
    }

    #[test]
    fn a_model_for_another_slot_is_refused() {
        let serving =
            "[slots.behavioral]\nchampion = \"behavioral\"\n[slots.ato]\nchampion = \"not-ato\"\n";
        let dir = models(
            &[("behavioral", "behavioral"), ("behavioral", "not-ato")],
            Some(serving),
        );
        let err = ServingHandle::load(dir.path(), input_index).err().unwrap();
        assert!(
            matches!(err, ServingError::Model(ModelError::WrongSlot { .. })),
            "{err}"
        );
    }

    #[test]
    fn a_broken_serving_file_or_new_broken_model_is_rejected_as_a_whole() {
        let dir = models(
            &[
                ("behavioral", "behavioral"),
                ("ato", "ato"),
                ("ato", "ato-next"),
            ],
            None,
        );
        let h = ServingHandle::load(dir.path(), input_index).unwrap();
        std::fs::write(dir.path().join(SERVING_FILE), "[slots.behavioral\n").unwrap();
        assert!(matches!(h.reload(false), ReloadOutcome::Rejected(_)));
        assert_eq!(h.current().models.len(), 2);
        // A shadow named for the first time that fails its goldens: nothing to fall back to.
        let mut g: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("ato-next/golden.json")).unwrap(),
        )
        .unwrap();
        g["outputs"][0] = serde_json::json!(0.5);
        std::fs::write(dir.path().join("ato-next/golden.json"), g.to_string()).unwrap();
        std::fs::write(
            dir.path().join(SERVING_FILE),
            "[slots.behavioral]\nchampion = \"behavioral\"\n[slots.ato]\nchampion = \"ato\"\nshadows = [\"ato-next\"]\n",
        )
        .unwrap();
        match h.reload(false) {
            ReloadOutcome::Rejected(why) => assert!(why.contains("golden"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            h.current().models.len(),
            2,
            "the previous snapshot keeps serving"
        );
        // Same directory for two slots.
        std::fs::write(
            dir.path().join(SERVING_FILE),
            "[slots.behavioral]\nchampion = \"ato\"\n[slots.ato]\nchampion = \"ato\"\n",
        )
        .unwrap();
        assert!(matches!(h.reload(true), ReloadOutcome::Rejected(ref w) if w.contains("slots")));
    }
}
