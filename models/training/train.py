#!/usr/bin/env python3
"""Trains riskstream's two models with PyTorch from simulator data and exports them for tract.

    riskstream simulate --events 300000 --seed 11 --warmup-days 14 --finish-journeys --output /tmp/train.jsonl
    riskstream simulate --events 120000 --seed 97 --warmup-days 14 --finish-journeys --output /tmp/test.jsonl   # a seed never trained on
    pip install -r models/training/requirements.txt      # PyTorch: large, never part of CI
    python3 models/training/train.py /tmp/train.jsonl /tmp/test.jsonl models/ [VERSION] [--only SLOT] [--skip-lofo] [--policy-lofo BIN]
    python3 models/training/train.py --pipeline-summary BIN models/   # only the cards' whole-pipeline section

Per slot: train on the training seed minus a calibration split (20 %), fit a Platt scaling on
the calibration split (folded into the exported graph: the output is a calibrated probability),
choose thresholds there, and report on the test seed: metrics, recall by family at the
thresholds, a reliability table. Then leave-one-family-out: for every fraud family of the slot,
a smaller model trained without that family, its recall on the family in the test seed. Each
fold's result is written to models/training/lofo/<slot>-<family>.json as it finishes and reused
when the script runs again (resumable; delete a file to redo that fold).

The input's first line names every model input; each further line is one event with its
ground truth and its inputs (`x`) exactly as the pipeline computes them (`simulate --output`
runs the serving feature code), so training and serving see the same features.

- behavioral (capture sessions): a 1-D convolutional encoder over the first 48 interactions of
  the session telemetry (`tel_seq_*`: gap, key, pointer, paste, pointer travel; windows of 4
  interactions encoded by shared layers, then max and mean over the windows), joined with
  static session features
  (device flags, vendor liveness / face match, injection signals, summary timing, device
  reuse from the feature store) -> probability of a bot / presentation attack.
- ato (transactions): an MLP over the transaction fields and the feature-store features
  (velocity, recency, new device / destination, entity counts) -> probability that the
  transaction is a step of an account takeover.

Both take one [batch, K] float tensor whose columns are the manifest's inputs in order; the
graph log-compresses heavy-tailed columns and normalises internally, so the pipeline feeds raw
feature values. For each model the script writes models/<slot>/{model.onnx, manifest.json,
golden.json, CARD.md}; the card compares the model with the rule a fraud team would write
first, on a held-out split. CI never trains: it checks tract's outputs against golden.json.
"""
import datetime
import hashlib
import json
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_passes  # noqa: E402

SEQ_LEN, SEQ_CH = 48, 5
WINDOW = 4  # interactions per window of the behavioral sequence encoder
SEQ_GROUP = "telemetry_sequence"

BEHAVIORAL_STATIC = [
    "device_emulator", "device_rooted", "ip_country_mismatch", "platform_web",
    "vendor_liveness", "vendor_face_match", "virtual_camera", "injection_detected",
    "screen_replay_score", "tel_events", "tel_dt_log_mean", "tel_dt_log_std",
    "tel_paste_frac", "tel_key_frac", "tel_pointer_straightness", "steps_total_log_s",
    "steps_min_s", "tel_modality_switch_frac", "tel_key_unpaired_frac", "device_distinct_accounts", "device_capture_sessions_24h",
    "device_failed_checks_24h", "device_failed_checks_7d", "device_first_seen_age_s",
    "acct_distinct_devices", "acct_device_is_new", "ip_distinct_accounts", "document_distinct_accounts",
    "graph_cluster_accounts",
]
SEQ_INPUTS = [f"tel_seq_{t:02}_{c}" for t in range(SEQ_LEN) for c in ("dt", "key", "pointer", "paste", "move")]

# Every store feature but the identity graph (labels are not part of simulate's output), plus
# the event's device and transaction fields.
ATO_EVENT = [
    "device_emulator", "device_rooted", "ip_country_mismatch", "platform_web",
    "tx_money_out", "tx_credential_change", "tx_login", "tx_amount_usd_log", "tx_amount_usd",
    "tx_dest_first_seen", "tx_session_age_log_s", "tx_channel_api", "tx_amount_vs_24h",
    "tx_failed_auth_attempts",
]
GRAPH = {"acct_labelled_fraud", "graph_linked_accounts", "graph_fraud_accounts_1hop", "graph_fraud_accounts_2hop"}

SLOTS = {
    "behavioral": {
        "event_type": "capture_session",
        "output": ("p_bot", "Probability that the capture session is a bot or presentation attack."),
        # The rule a fraud team would write first: count the hard red flags.
        "rule": lambda x, c: (x[:, c["device_emulator"]] + x[:, c["virtual_camera"]]
                              + x[:, c["injection_detected"]] + (x[:, c["vendor_liveness"]] < 0.5)
                              + 0.5 * (x[:, c["tel_dt_log_std"]] < 0.3)
                              + 0.5 * (x[:, c["device_distinct_accounts"]] >= 3)),
        "rule_text": "emulator + virtual camera + injection + (liveness < 0.5) + 0.5 x (timing std < 0.3) + 0.5 x (device shared by >= 3 accounts)",
        "arch": "1-D convolutional encoder over the first 48 interactions (kernel = stride = 4 interactions: 12 windows of 4 x 5 values -> 32 -> 32 ReLU units, shared by every window, then max and mean over the windows, 64 values; replaced the 2.x GRU-32 at a fraction of its cost), concatenated with 29 normalised static features -> MLP 64 -> 32 -> 1, sigmoid",
    },
    "ato": {
        "event_type": "transaction",
        "output": ("p_ato", "Probability that the transaction is a step of an account takeover."),
        # New device moving money to a new destination, or changing credentials on a new device.
        "rule": lambda x, c: (x[:, c["acct_device_is_new"]] * (x[:, c["tx_dest_first_seen"]] + x[:, c["tx_credential_change"]])
                              + 0.5 * (x[:, c["acct_credential_changes_24h"]] > 0) * x[:, c["tx_money_out"]]),
        "rule_text": "new device x (new destination + credential change) + 0.5 x (money out after a credential change in 24 h)",
        "arch": "MLP (log-compression and normalisation in the graph) -> 128 -> 64 -> 1 ReLU units, sigmoid",
    },
}


# ---------------------------------------------------------------- metrics

def auc_roc(y, s):
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inv, ranks)
    ranks = (sums / counts)[inv]
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_pr(y, s):
    order = np.argsort(-s, kind="mergesort")
    y = y[order]
    tp = np.cumsum(y)
    precision = tp / np.arange(1, len(y) + 1)
    return float((precision * y).sum() / max(y.sum(), 1))


def threshold_at_fpr(y, s, fpr):
    neg = np.sort(s[y == 0])[::-1]
    k = min(int(np.floor(fpr * len(neg))), len(neg) - 1)
    return float(neg[k])


def recall_at_fpr(y, s, fpr=0.01):
    return float((s[y == 1] > threshold_at_fpr(y, s, fpr)).mean())


# ---------------------------------------------------------------- models

class Prep(nn.Module):
    """log1p on heavy-tailed columns, then (x - mean) / std; constants baked into the graph."""

    def __init__(self, log_mask, mean, std):
        super().__init__()
        self.register_buffer("log_mask", torch.tensor(log_mask, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x):
        logged = torch.log1p(torch.clamp(x, min=0.0))
        x = self.log_mask * logged + (1 - self.log_mask) * x
        return (x - self.mean) / self.std


class Tabular(nn.Module):
    def __init__(self, prep, d):
        super().__init__()
        self.prep = prep
        self.net = nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x):
        return self.net(self.prep(x))  # a logit


class Behavioral(nn.Module):
    def __init__(self, prep, n_static, seq_mean, seq_std):
        super().__init__()
        self.prep, self.n_static = prep, n_static
        self.register_buffer("seq_mean", torch.tensor(seq_mean, dtype=torch.float32))
        self.register_buffer("seq_std", torch.tensor(seq_std, dtype=torch.float32))
        # A 1-D convolution with kernel = stride = 4 interactions (a patch encoder), not a recurrent
        # net: the 48 steps become 12 windows of 4 x 5 values, each encoded by the same two
        # layers (plain matrix products over every window of every session at once: no im2col,
        # no 48 dependent steps as in the 2.x GRU), then max and mean over the windows.
        self.window = nn.Sequential(nn.Linear(WINDOW * SEQ_CH, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(n_static + 64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))

        self.folded = False

    def fold_normalisation(self):
        """Folds the per-channel normalisation of the sequence into the window layer's weights
        (W' = W / std, b' = b - W' mean): the exported graph then starts with a matrix product
        instead of two broadcast element-wise ops over all 240 values, same outputs."""
        with torch.no_grad():
            mean = self.seq_mean.repeat(WINDOW)
            std = self.seq_std.repeat(WINDOW)
            first = self.window[0]
            first.weight /= std[None, :]
            first.bias -= first.weight @ mean
        self.folded = True

    def forward(self, x):
        static = self.prep(x[:, : self.n_static])
        seq = x[:, self.n_static:]
        if not self.folded:
            seq = (seq.reshape(-1, SEQ_LEN, SEQ_CH) - self.seq_mean) / self.seq_std
        seq = seq.reshape(-1, SEQ_LEN // WINDOW, WINDOW * SEQ_CH)
        h = self.window(seq)
        pooled = torch.cat([h.amax(dim=1), h.mean(dim=1)], dim=1)
        return self.head(torch.cat([static, pooled], dim=1))  # a logit


class Calibrated(nn.Module):
    """Platt scaling in the graph: p = sigmoid(a * logit + b), a and b fitted on held-out data,
    so the exported score is a calibrated probability and thresholds mean what they say."""

    def __init__(self, base, a=1.0, b=0.0):
        super().__init__()
        self.base = base
        self.register_buffer("a", torch.tensor(float(a)))
        self.register_buffer("b", torch.tensor(float(b)))

    def forward(self, x):
        return torch.sigmoid(self.a * self.base(x) + self.b)


def platt(logits, y):
    """The (a, b) minimising log loss of sigmoid(a * logit + b) on held-out labels."""
    z = torch.tensor(logits, dtype=torch.float64)
    t = torch.tensor(y, dtype=torch.float64)
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(ab[0] * z + ab[1], t)
        loss.backward()
        return loss

    opt.step(closure)
    return float(ab[0]), float(ab[1])


def reliability(y, p, edges=(0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0001)):
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (p >= lo) & (p < hi)
        if m.sum():
            rows.append((lo, min(hi, 1.0), int(m.sum()), float(p[m].mean()), float(y[m].mean())))
    return rows


def fit(model, x, y, epochs, lr=2e-3, batch=256, seed=0, verbose=True):
    torch.manual_seed(seed)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)[:, None]
    pos_weight = min(float((y == 0).sum() / max((y == 1).sum(), 1)), 10.0)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt))
        total = 0.0
        for start in range(0, len(xt), batch):
            b = perm[start:start + batch]
            w = torch.where(yt[b] == 1, pos_weight, 1.0)
            loss = nn.functional.binary_cross_entropy_with_logits(model(xt[b]), yt[b], weight=w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        sched.step()
        if verbose:
            print(f"  epoch {epoch + 1}/{epochs} loss {total / len(xt):.4f}", flush=True)
    model.eval()
    return model


def predict(model, x):
    with torch.no_grad():
        return model(torch.tensor(x, dtype=torch.float32))[:, 0].numpy()


def export(model, path, k):
    torch.onnx.export(
        model, (torch.zeros(2, k),), path, opset_version=17, dynamo=False,
        input_names=["features"], output_names=["score"],
        dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}},
    )
    onnx_passes.for_tract(path)  # same values, cheaper in tract (see onnx_passes.py)


# ---------------------------------------------------------------- main

def load(path):
    with open(path) as f:
        names = json.loads(f.readline())["inputs"]
        rows = [json.loads(line) for line in f]
    return names, rows


def design(slot, spec, rows, col, ato_store):
    sel = [r for r in rows if r["event_type"] == spec["event_type"]]
    if slot == "behavioral":
        static, names = BEHAVIORAL_STATIC, BEHAVIORAL_STATIC + SEQ_INPUTS
    else:
        static = names = ato_store + ATO_EVENT
    x = np.array([[r["x"][col[n]] for n in names] for r in sel], dtype=np.float32)
    y = np.array([r["fraud"] for r in sel], dtype=np.float32)
    fam = np.array([r["scenario"] for r in sel])
    return static, names, x, y, fam


def train_slot(slot, static, x, y, epochs, verbose=True, seed=0):
    """A calibrated model trained on x, y: 80 % to train, 20 % to calibrate (and to choose
    thresholds). Returns the calibrated model, the calibration split's scores and labels, and
    the preprocessing constants."""
    cal = np.random.default_rng(42 + seed).random(len(x)) < 0.2
    xs = x[:, : len(static)]
    # heavy-tailed: non-negative columns whose max is far above their median
    log_mask = np.array([float(xs[:, i].min() >= 0 and xs[:, i].max() > 20) for i in range(len(static))], dtype=np.float32)
    xp = np.where(log_mask > 0, np.log1p(np.maximum(xs, 0)), xs)
    mean = xp[~cal].mean(0)
    std = np.maximum(xp[~cal].std(0), 1e-3)
    prep = Prep(log_mask, mean, std)
    if slot == "behavioral":
        seq = x[:, len(static):].reshape(-1, SEQ_LEN, SEQ_CH)[~cal].reshape(-1, SEQ_CH)
        base = Behavioral(prep, len(static), seq.mean(0), np.maximum(seq.std(0), 1e-3))
        base = fit(base, x[~cal], y[~cal], epochs=epochs, verbose=verbose, seed=seed)
        before = predict(base, x[cal])
        base.fold_normalisation()
        drift = float(np.abs(predict(base, x[cal]) - before).max())
        assert drift < 1e-3, drift
    else:
        base = fit(Tabular(prep, len(static)), x[~cal], y[~cal], epochs=epochs, verbose=verbose, seed=seed)
    a, b = platt(predict(base, x[cal]), y[cal])
    model = Calibrated(base, a, b)
    model.eval()
    return model, predict(model, x[cal]), y[cal], (a, b), (log_mask, mean, std)


def write_model_dir(model, outd, slot, spec, version, names, x_train, thresholds, gx):
    """model.onnx, manifest.json and golden.json: what a worker loads."""
    os.makedirs(outd, exist_ok=True)
    export(model, f"{outd}/model.onnx", len(names))
    raw_mean, raw_std = x_train.mean(0), np.maximum(x_train.std(0), 1e-3)
    inputs_spec = []
    for i, n in enumerate(names):
        spec_i = {"name": n, "mean": round(float(raw_mean[i]), 6), "std": round(float(raw_std[i]), 6)}
        if n.startswith("tel_seq_"):
            spec_i["group"] = SEQ_GROUP
        inputs_spec.append(spec_i)
    manifest = {
        "name": slot, "version": version, "onnx": "model.onnx", "golden": "golden.json",
        "inputs": inputs_spec,
        "output": {"name": spec["output"][0], "meaning": spec["output"][1]},
        "thresholds": {k: round(v, 6) for k, v in thresholds.items()},
        # The first linear layer after the elementwise preparation of the static inputs: reason
        # codes occlude those inputs through it (riskstream-models' layered.rs). Node names as
        # torch.onnx.export names the modules of Tabular (`net.0`) and Behavioral (`head.0`).
        "explain_layer": "/base/head/head.0/Gemm" if slot == "behavioral" else "/base/net/net.0/Gemm",
    }
    json.dump(manifest, open(f"{outd}/manifest.json", "w"), indent=1)
    gy = predict(model, gx)
    json.dump({"inputs": gx.tolist(), "outputs": [float(v) for v in gy]}, open(f"{outd}/golden.json", "w"))


POLICY_SEEDS = (97, 98, 99)


def demo_summary(binary, models_dir, seed):
    """`riskstream demo` as fast as it goes on `seed` with `models_dir`: its summary JSON."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        summary = os.path.join(tmp, "summary.json")
        subprocess.run([binary, "demo", "--seed", str(seed), "--rate", "0", "--bad-records", "0",
                        "--models", models_dir, "--summary-json", summary],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.load(open(summary))


def policy_lofo(binary, models_dir, fold_dir, lofo_dir, families_by_slot):
    """Leave-one-family-out through the real pipeline and policy: for each fraud family, the
    committed serving.toml and models with every slot that trained on the family replaced by
    its fold's model (trained without it), `riskstream demo` on seeds never trained on; the
    family's share of events not ALLOWed. One file per family, reused when present."""
    import shutil
    import tempfile
    families = sorted({f for fs in families_by_slot.values() for f in fs})
    out = {}
    for f in families:
        path = os.path.join(lofo_dir, f"policy-{f}.json")
        if os.path.exists(path):
            out[f] = json.load(open(path))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(os.path.join(models_dir, "serving.toml"), tmp)
            replaced = []
            for slot in SLOTS:
                src = os.path.join(models_dir, slot)
                if f in families_by_slot.get(slot, ()):
                    src = os.path.join(fold_dir, f"{slot}-{f}")
                    replaced.append(slot)
                shutil.copytree(src, os.path.join(tmp, slot))
            events = stopped = 0
            for seed in POLICY_SEEDS:
                d = demo_summary(binary, tmp, seed)["by_scenario"].get(f, {})
                events += sum(d.values())
                stopped += sum(d.values()) - d.get("ALLOW", 0)
        res = {"family": f, "folds": replaced, "seeds": list(POLICY_SEEDS), "events": events,
               "stopped": stopped / max(events, 1)}
        json.dump(res, open(path, "w"), indent=1)
        out[f] = res
        print(f"  policy leave-one-family-out: {f}: {res['stopped']:.3f} of {events} events stopped", flush=True)
    return out


def pipeline_summary(binary, models_dir, lofo_dir):
    """The committed models and policy through the whole pipeline: `riskstream demo` on the
    seeds the leave-one-family-out runs use (never trained on); fraud stopped overall and by
    family, legitimate events stopped and blocked. Written to lofo/pipeline.json, reused when
    present (delete it after changing the models or the policy)."""
    path = os.path.join(lofo_dir, "pipeline.json")
    if os.path.exists(path):
        return json.load(open(path))
    by = {}
    outcome = {"fraud_events": 0, "fraud_stopped": 0.0, "legit_events": 0, "legit_stopped": 0.0, "legit_blocked": 0.0}
    for seed in POLICY_SEEDS:
        j = demo_summary(binary, models_dir, seed)
        o = j["outcome"]
        outcome["fraud_events"] += o["fraud_events"]
        outcome["legit_events"] += o["legit_events"]
        outcome["fraud_stopped"] += o["fraud_stopped"] * o["fraud_events"]
        outcome["legit_stopped"] += o["legit_stopped"] * o["legit_events"]
        outcome["legit_blocked"] += o["legit_blocked"] * o["legit_events"]
        for f, d in j["by_scenario"].items():
            b = by.setdefault(f, {"events": 0, "stopped": 0, "blocked": 0})
            b["events"] += sum(d.values())
            b["stopped"] += sum(d.values()) - d.get("ALLOW", 0)
            b["blocked"] += d.get("BLOCK", 0)
    for k in ("fraud_stopped",):
        outcome[k] /= max(outcome["fraud_events"], 1)
    for k in ("legit_stopped", "legit_blocked"):
        outcome[k] /= max(outcome["legit_events"], 1)
    res = {"seeds": list(POLICY_SEEDS), "outcome": outcome, "by_family": by}
    json.dump(res, open(path, "w"), indent=1)
    print(f"  whole pipeline, committed models: fraud stopped {outcome['fraud_stopped']:.3f}, "
          f"legitimate stopped {outcome['legit_stopped']:.4f}, blocked {outcome['legit_blocked']:.4f}", flush=True)
    return res


PIPELINE_HEADING = "## Whole pipeline (committed models and policy)"


def pipeline_section(res, policy):
    """The card section for `pipeline_summary`'s result and the policy leave-one-family-out."""
    o = res["outcome"]
    lines = [PIPELINE_HEADING, "",
             f"`riskstream demo` with the committed `serving.toml` and models on seeds "
             f"{res['seeds'][0]}–{res['seeds'][-1]} (never trained on; whole journeys; warm-up history not counted): "
             f"**fraud stopped {o['fraud_stopped']:.1%}** of {o['fraud_events']} events; **legitimate events stopped "
             f"{o['legit_stopped']:.2%}, blocked {o['legit_blocked']:.2%}** of {o['legit_events']}. "
             f"Stopped = any decision but ALLOW. By family (left out = the family excluded from every slot's "
             f"training, same seeds):", "",
             "| family | events | stopped | blocked | left out of training: stopped |", "|---|---|---|---|---|"]
    for f, b in sorted(res["by_family"].items()):
        if f == "warmup":
            continue
        left = f"{policy[f]['stopped']:.1%}" if f in policy else "–"
        lines.append(f"| {f} | {b['events']} | {b['stopped'] / max(b['events'], 1):.1%} | "
                     f"{b['blocked'] / max(b['events'], 1):.1%} | {left} |")
    return "\n".join(lines) + "\n"


def put_pipeline_section(card_path, section):
    """Puts `section` into a card, replacing an earlier one, before `## Limits`."""
    text = open(card_path).read()
    if PIPELINE_HEADING in text:
        i = text.index(PIPELINE_HEADING)
        j = text.index("\n## ", i + 1) + 1
        text = text[:i] + text[j:]
    i = text.index("## Limits")
    open(card_path, "w").write(text[:i] + section + "\n" + text[i:])


def write_card(c, policy):
    """CARD.md of one slot from its training run `c` and the policy-level leave-one-family-out."""
    slot, spec, version, today, pa, pb, data_sha, test_sha, x, xt, fam, y, yt, names, static, metrics, by_fam, by_fam_rule, fraud_families, lofo, thresholds, s_model, epochs, families, out_dir = (
        c["slot"], c["spec"], c["version"], c["today"], c["pa"], c["pb"], c["data_sha"], c["test_sha"], c["x"], c["xt"], c["fam"], c["y"], c["yt"], c["names"], c["static"], c["metrics"], c["by_fam"], c["by_fam_rule"], c["fraud_families"], c["lofo"], c["thresholds"], c["s_model"], c["epochs"], c["families"], c["out_dir"])
    m, r = metrics["model"], metrics["rule"]
    legit = yt == 0
    shown = names if slot == "ato" else static + [f"tel_seq_00_dt … tel_seq_47_move ({len(SEQ_INPUTS)} values, group `{SEQ_GROUP}`)"]
    rel = reliability(yt, s_model)
    card = f"""# Model card: `{slot}` {version}

{spec['output'][1]}

- **Trained**: {today}, by `models/training/train.py` (PyTorch {torch.__version__}, exported to ONNX opset 17 with a dynamic batch; served by tract).
- **Architecture**: {spec['arch']}; Platt scaling (a = {pa:.4f}, b = {pb:.4f}) inside the graph, so the output is a calibrated probability. Log-compression of heavy-tailed inputs and normalisation are inside the graph: the pipeline feeds raw feature values.
- **Data**: training `riskstream simulate --events 300000 --seed 11 --warmup-days 14 --finish-journeys --output …` ({len(x)} {spec['event_type'].replace('_', ' ')} events, sha256 prefix `{data_sha}`; 80 % to train, 20 % to calibrate and choose thresholds); **test** on seed 97, never trained on (`simulate --events 120000 --seed 97 --warmup-days 14 --finish-journeys`, {len(xt)} events, sha256 prefix `{test_sha}`). Fraud families in training: {', '.join(sorted(set(fam[y == 1])))}.
- **Inputs** ({len(names)}, in order): {', '.join('`' + n + '`' if not n.startswith('tel_seq_0') or n == 'tel_seq_00_dt' else n for n in shown)}. Names refer to `FEATURES.md`; the pipeline computes them with the same code that produced the training data.
- **Output**: `{spec['output'][0]}` in [0, 1], calibrated.

## Test-seed metrics ({len(xt)} events, {int(yt.sum())} positives)

| scorer | AUC-ROC | AUC-PR | recall at 1 % FPR |
|---|---|---|---|
| this model | {m['auc_roc']:.4f} | {m['auc_pr']:.4f} | {m['recall_at_1pct_fpr']:.4f} |
| rule baseline: {spec['rule_text']} | {r['auc_roc']:.4f} | {r['auc_pr']:.4f} | {r['recall_at_1pct_fpr']:.4f} |

## By family, at the thresholds below (model alone; the policy's signal rules act on top)

Share of the family's test events whose score reaches each threshold; the rule baseline at its own
1 % false-positive rate. Leave-one-family-out: a model trained without that family
({max(3, epochs // 3)} epochs), calibrated and thresholded the same way, on the same test events; and
the whole pipeline with that model (and the other slot's model trained without the family, if it
had it) in place of the champion: `riskstream demo` with the committed policy on seeds 97–99 (never
trained on), the share of the family's events not allowed (`train.py --policy-lofo BIN`).

| family | fraud | challenge | review | block | rule baseline | left out of training: challenge | left out: block | left out, whole pipeline: stopped |
|---|---|---|---|---|---|---|---|---|
""" + "".join(
        f"| {f} | {'yes' if f in fraud_families else 'no'} | {by_fam[f]['challenge']:.1%} | {by_fam[f]['review']:.1%} | {by_fam[f]['block']:.1%} | {by_fam_rule[f]:.1%} | "
        + (f"{lofo[f]['recall_challenge']:.1%} | {lofo[f]['recall_block']:.1%} |" if f in lofo else "– | – |")
        + (f" {policy[f]['stopped']:.1%} of {policy[f]['events']} |" if f in policy else " – |") + "\n"
        for f in families) + f"""
Legitimate test events reaching challenge / review / block: {(s_model[legit] >= thresholds['challenge']).mean():.2%} / {(s_model[legit] >= thresholds['review']).mean():.2%} / {(s_model[legit] >= thresholds['block']).mean():.2%}.

## Calibration (test seed)

| score band | events | mean score | observed fraud rate |
|---|---|---|---|
""" + "".join(f"| {lo:.2f}–{hi:.2f} | {n} | {ms:.3f} | {obs:.3f} |\n" for lo, hi, n, ms, obs in rel) + f"""
## Suggested thresholds (calibration split)

challenge {thresholds['challenge']:.4f} (1 % of legitimate events), review {thresholds['review']:.4f} (0.4 %), block {thresholds['block']:.4f} (0.1 %); each at least a probability of 0.3 / 0.5 / 0.8. The decision policy (`models/serving.toml`) refers to them by name.

## Limits

Trained on simulated traffic only: it has learned the simulator's families, not real fraud; the leave-one-family-out column is the honest estimate of what it does on a family it has not seen. Retrain on logged verdict features (the `features` field of each verdict) joined with labels before trusting it with real decisions.
"""
    open(f"{out_dir}/{slot}/CARD.md", "w").write(card)


def choose_thresholds(y, s):
    """On the calibration split: challenge at 1 % of legitimate events, review 0.4 %, block
    0.1 % — and never below a calibrated probability of 0.3 / 0.5 / 0.8."""
    t = {
        "challenge": max(threshold_at_fpr(y, s, 0.01), 0.3),
        "review": max(threshold_at_fpr(y, s, 0.004), 0.5),
        "block": max(threshold_at_fpr(y, s, 0.001), 0.8),
    }
    t["review"] = max(t["review"], t["challenge"] + 1e-3)
    t["block"] = max(t["block"], t["review"] + 1e-3)
    return t


def main():
    args = sys.argv[1:]
    only = None
    if "--only" in args:
        i = args.index("--only")
        only = args[i + 1]
        del args[i:i + 2]
    skip_lofo = "--skip-lofo" in args
    args = [a for a in args if a != "--skip-lofo"]
    binary = None
    if "--policy-lofo" in args:
        i = args.index("--policy-lofo")
        binary = args[i + 1]
        del args[i:i + 2]
    fold_dir = "/tmp/riskstream-lofo-models"
    data_path, test_path, out_dir = args[0], args[1], args[2].rstrip("/")
    version = args[3] if len(args) > 3 else "4.0.0"
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    all_names, rows = load(data_path)
    test_names, test_rows = load(test_path)
    assert test_names == all_names, "training and test data from different feature versions"
    col = {n: i for i, n in enumerate(all_names)}
    data_sha = hashlib.sha256(open(data_path, "rb").read()).hexdigest()[:16]
    test_sha = hashlib.sha256(open(test_path, "rb").read()).hexdigest()[:16]
    today = datetime.date.today().isoformat()
    ato_store = [n for n in all_names[: col["device_emulator"]] if n not in GRAPH]
    lofo_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lofo")
    os.makedirs(lofo_dir, exist_ok=True)
    runs = {}
    for slot, spec in SLOTS.items():
        if only and slot != only:
            continue
        static, names, x, y, fam = design(slot, spec, rows, col, ato_store)
        _, _, xt, yt, famt = design(slot, spec, test_rows, col, ato_store)
        epochs = 14 if slot == "behavioral" else 10
        print(f"{slot}: {len(x)} training events, {int(y.sum())} positives, {len(names)} inputs; test {len(xt)} events", flush=True)
        model, s_cal, y_cal, (pa, pb), (log_mask, mean, std) = train_slot(slot, static, x, y, epochs)
        thresholds = choose_thresholds(y_cal, s_cal)
        s_model = predict(model, xt)
        c = {n: i for i, n in enumerate(names)}
        s_rule = spec["rule"](xt, c).astype(np.float64) + 1e-9 * s_model  # tie-break only
        scorers = [("model", s_model), ("rule", s_rule)]
        metrics = {}
        for label, sc in scorers:
            metrics[label] = {"auc_roc": auc_roc(yt, sc), "auc_pr": auc_pr(yt, sc), "recall_at_1pct_fpr": recall_at_fpr(yt, sc)}
        families = sorted(set(famt))
        fraud_families = sorted(set(famt[yt == 1]) | set(fam[y == 1]))
        by_fam = {f: {k: float((s_model[famt == f] >= thresholds[k]).mean()) for k in ("challenge", "review", "block")} for f in families}
        r_thr = threshold_at_fpr(yt, s_rule, 0.01)
        by_fam_rule = {f: float((s_rule[famt == f] > r_thr).mean()) for f in families}

        # leave-one-family-out: resumable, one file per fold
        lofo = {}
        for f in fraud_families if not skip_lofo else []:
            path = os.path.join(lofo_dir, f"{slot}-{f}.json")
            if os.path.exists(path) and (not binary or os.path.isdir(os.path.join(fold_dir, f"{slot}-{f}"))):
                lofo[f] = json.load(open(path))
                continue
            keep = fam != f
            print(f"  leave-one-family-out: {slot} without {f} ({int((~keep).sum())} events left out)", flush=True)
            m_f, s_cal_f, y_cal_f, _, _ = train_slot(slot, static, x[keep], y[keep], max(3, epochs // 3), verbose=False, seed=1)
            t_f = choose_thresholds(y_cal_f, s_cal_f)
            gx_f = np.vstack([xt[:8], np.zeros((1, len(names)))]).astype(np.float32)
            write_model_dir(m_f, os.path.join(fold_dir, f"{slot}-{f}"), slot, spec, f"{version}-without-{f}",
                            names, x[keep], t_f, gx_f)
            s_f = predict(m_f, xt[famt == f])
            res = {"slot": slot, "family": f, "excluded_training_events": int((~keep).sum()),
                   "test_events": int((famt == f).sum()), "thresholds": t_f,
                   "recall_challenge": float((s_f >= t_f["challenge"]).mean()),
                   "recall_block": float((s_f >= t_f["block"]).mean()),
                   "epochs": max(3, epochs // 3), "trained": today}
            json.dump(res, open(path, "w"), indent=1)
            lofo[f] = res
            print(f"    recall at its challenge threshold {res['recall_challenge']:.3f}", flush=True)

        # Golden vectors: test rows of each family, an all-zero row and a huge-value row.
        gi = []
        for f in families:
            gi.extend(list(np.where(famt == f)[0][:4]))
        gx = np.vstack([xt[gi], np.zeros((1, len(names))), np.full((1, len(names)), 1e6)]).astype(np.float32)
        write_model_dir(model, f"{out_dir}/{slot}", slot, spec, version, names, x, thresholds, gx)

        m, r = metrics["model"], metrics["rule"]
        runs[slot] = dict(locals())
        print(f"{slot}: model AUC-ROC {m['auc_roc']:.4f} AUC-PR {m['auc_pr']:.4f} R@1%FPR {m['recall_at_1pct_fpr']:.4f} | "
              f"rule AUC-PR {r['auc_pr']:.4f} | thresholds {thresholds} | platt {pa:.3f} {pb:.3f}", flush=True)
        for f in families:
            extra = f" lofo {lofo[f]['recall_challenge']:.3f}" if f in lofo else ""
            print(f"  {f:14s} challenge {by_fam[f]['challenge']:.3f} block {by_fam[f]['block']:.3f}{extra}", flush=True)
    policy = {}
    if binary and not skip_lofo:
        families_by_slot = {slot: c['fraud_families'] for slot, c in runs.items()}
        policy = policy_lofo(binary, out_dir, fold_dir, lofo_dir, families_by_slot)
    else:
        for f in sorted(os.listdir(lofo_dir)):
            if f.startswith('policy-'):
                r = json.load(open(os.path.join(lofo_dir, f)))
                policy[r['family']] = r
    for c in runs.values():
        write_card(c, policy)
    if binary and not skip_lofo:
        section = pipeline_section(pipeline_summary(binary, out_dir, lofo_dir), policy)
        for slot in SLOTS:
            put_pipeline_section(os.path.join(out_dir, slot, "CARD.md"), section)


def pipeline_only(binary, models_dir):
    """`train.py --pipeline-summary BIN MODELS_DIR`: only the whole-pipeline section of the cards
    (after a policy change), from the committed models and the leave-one-family-out files."""
    lofo_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lofo")
    policy = {}
    for f in sorted(os.listdir(lofo_dir)):
        if f.startswith("policy-"):
            r = json.load(open(os.path.join(lofo_dir, f)))
            policy[r["family"]] = r
    section = pipeline_section(pipeline_summary(binary, models_dir, lofo_dir), policy)
    for slot in SLOTS:
        put_pipeline_section(os.path.join(models_dir, slot, "CARD.md"), section)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pipeline-summary"]:
        pipeline_only(sys.argv[2], sys.argv[3].rstrip("/"))
    else:
        main()
