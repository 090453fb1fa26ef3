#!/usr/bin/env python3
"""Trains riskstream's baseline models from simulator data and exports them for tract.

    riskstream simulate --events 150000 --seed 11 --output /tmp/train.jsonl
    python3 models/training/train_baseline.py /tmp/train.jsonl models/

Each line of the input carries an event's ground truth and every model input exactly as the
pipeline computes it (`simulate --output` runs the serving feature code), so training and
serving see the same features.

For each slot (behavioral: capture sessions; ato: transactions) it trains a small MLP with
numpy (normalisation baked into the graph), compares it on a held-out split with a simple
rule baseline, and writes models/<slot>/{model.onnx, manifest.json, golden.json, CARD.md}.
Only numpy and onnx are needed (requirements-baseline.txt): no PyTorch in CI.
"""
import datetime
import hashlib
import json
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SLOTS = {
    "behavioral": {
        "event_type": "capture_session",
        "output": ("p_bot", "Probability that the capture session is a bot or presentation attack."),
        "inputs": [
            "device_emulator", "device_rooted", "ip_country_mismatch", "platform_web",
            "vendor_liveness", "vendor_face_match", "virtual_camera", "injection_detected",
            "screen_replay_score", "tel_events", "tel_dt_log_mean", "tel_dt_log_std",
            "tel_paste_frac", "tel_key_frac", "tel_pointer_straightness", "steps_total_log_s",
            "steps_min_s", "device_distinct_accounts", "device_capture_sessions_24h",
            "acct_distinct_devices", "acct_device_is_new",
        ],
        # The rule a fraud team would write first: count the hard red flags.
        "rule": lambda x, c: (x[:, c["device_emulator"]] + x[:, c["virtual_camera"]]
                              + x[:, c["injection_detected"]] + (x[:, c["vendor_liveness"]] < 0.5)
                              + 0.5 * (x[:, c["tel_dt_log_std"]] < 0.3)),
        "rule_text": "emulator + virtual camera + injection + (liveness < 0.5) + 0.5 x (timing std < 0.3)",
    },
    "ato": {
        "event_type": "transaction",
        "output": ("p_ato", "Probability that the transaction is a step of an account takeover."),
        "inputs": [
            "acct_money_out_count_1h", "acct_money_out_count_24h", "acct_money_out_usd_1h",
            "acct_money_out_usd_24h", "acct_credential_changes_24h", "acct_logins_24h",
            "acct_distinct_devices", "acct_device_is_new", "device_distinct_accounts",
            "device_emulator", "device_rooted", "ip_country_mismatch", "platform_web",
            "tx_money_out", "tx_credential_change", "tx_login", "tx_amount_usd_log",
            "tx_dest_first_seen", "tx_session_age_log_s", "tx_channel_api",
        ],
        # New device moving money to a new destination, or changing credentials on a new device.
        "rule": lambda x, c: (x[:, c["acct_device_is_new"]] * (x[:, c["tx_dest_first_seen"]] + x[:, c["tx_credential_change"]])
                              + 0.5 * (x[:, c["acct_credential_changes_24h"]] > 0) * x[:, c["tx_money_out"]]),
        "rule_text": "new device x (new destination + credential change) + 0.5 x (money out after a credential change in 24 h)",
    },
}

# Heavy-tailed inputs are log-compressed inside the graph before normalisation.
LOG_INPUTS = {"acct_money_out_usd_1h", "acct_money_out_usd_24h", "tel_events", "device_distinct_accounts",
              "acct_money_out_count_24h", "acct_logins_24h", "acct_distinct_devices", "device_capture_sessions_24h"}


def auc_roc(y, s):
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    # average ranks for ties
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


def recall_at_fpr(y, s, fpr=0.01):
    neg = np.sort(s[y == 0])[::-1]
    k = int(np.floor(fpr * len(neg)))
    thr = neg[k] if k < len(neg) else -np.inf
    return float((s[y == 1] > thr).mean()), float(thr)


def threshold_at_fpr(y, s, fpr):
    neg = np.sort(s[y == 0])[::-1]
    k = min(int(np.floor(fpr * len(neg))), len(neg) - 1)
    return float(neg[k])


def prepare(x, names):
    x = x.copy()
    for i, n in enumerate(names):
        if n in LOG_INPUTS:
            x[:, i] = np.log1p(np.maximum(x[:, i], 0))
    return x


def train_mlp(x, y, hidden=32, epochs=40, lr=3e-3, seed=0):
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    w1 = rng.normal(0, np.sqrt(2 / d), (d, hidden)).astype(np.float64)
    b1 = np.zeros(hidden)
    w2 = rng.normal(0, np.sqrt(1 / hidden), (hidden, 1))
    b2 = np.zeros(1)
    params = [w1, b1, w2, b2]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    pos_weight = min((y == 0).sum() / max((y == 1).sum(), 1), 10.0)
    step = 0
    for epoch in range(epochs):
        idx = rng.permutation(len(x))
        for start in range(0, len(x), 256):
            b = idx[start:start + 256]
            xb, yb = x[b], y[b][:, None]
            h = np.maximum(xb @ w1 + b1, 0)
            z = h @ w2 + b2
            p = 1 / (1 + np.exp(-z))
            wgt = np.where(yb == 1, pos_weight, 1.0)
            dz = (p - yb) * wgt / len(b)
            grads = [None] * 4
            grads[2] = h.T @ dz + 1e-4 * w2
            grads[3] = dz.sum(0)
            dh = (dz @ w2.T) * (h > 0)
            grads[0] = xb.T @ dh + 1e-4 * w1
            grads[1] = dh.sum(0)
            step += 1
            for i, g in enumerate(grads):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                mh = m[i] / (1 - 0.9 ** step)
                vh = v[i] / (1 - 0.999 ** step)
                params[i] -= lr * mh / (np.sqrt(vh) + 1e-8)
    return [p.astype(np.float32) for p in params]


def forward32(x_raw, names, mean, std, params):
    x = prepare(x_raw.astype(np.float32), names).astype(np.float32)
    x = (x - mean) / std
    w1, b1, w2, b2 = params
    h = np.maximum(x @ w1 + b1, 0).astype(np.float32)
    z = (h @ w2 + b2).astype(np.float32)
    return (1 / (1 + np.exp(-z))).astype(np.float32)[:, 0]


def export_onnx(path, names, mean, std, params, slot):
    d = len(names)
    w1, b1, w2, b2 = params
    log_mask = np.array([1.0 if n in LOG_INPUTS else 0.0 for n in names], dtype=np.float32)
    inits = [
        numpy_helper.from_array(log_mask, "log_mask"),
        numpy_helper.from_array((1 - log_mask).astype(np.float32), "lin_mask"),
        numpy_helper.from_array(np.zeros(d, dtype=np.float32), "zero"),
        numpy_helper.from_array(mean.astype(np.float32), "mean"),
        numpy_helper.from_array(std.astype(np.float32), "std"),
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
        numpy_helper.from_array(np.ones(d, dtype=np.float32), "one"),
    ]
    nodes = [
        # log1p(max(x, 0)) on the heavy-tailed columns, identity elsewhere
        helper.make_node("Max", ["features", "zero"], ["xpos"]),
        helper.make_node("Add", ["xpos", "one"], ["xp1"]),
        helper.make_node("Log", ["xp1"], ["xlog"]),
        helper.make_node("Mul", ["xlog", "log_mask"], ["xlog_m"]),
        helper.make_node("Mul", ["features", "lin_mask"], ["xlin_m"]),
        helper.make_node("Add", ["xlog_m", "xlin_m"], ["xprep"]),
        helper.make_node("Sub", ["xprep", "mean"], ["xc"]),
        helper.make_node("Div", ["xc", "std"], ["xn"]),
        helper.make_node("Gemm", ["xn", "w1", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes, f"riskstream_{slot}",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", d])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="riskstream-train-baseline")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main():
    data_path, out_dir = sys.argv[1], sys.argv[2].rstrip("/")
    version = sys.argv[3] if len(sys.argv) > 3 else "1.0.0"
    rows = [json.loads(l) for l in open(data_path)]
    data_sha = hashlib.sha256(open(data_path, "rb").read()).hexdigest()[:16]
    today = datetime.date.today().isoformat()
    for slot, spec in SLOTS.items():
        names = spec["inputs"]
        sel = [r for r in rows if r["event_type"] == spec["event_type"]]
        x = np.array([[r["inputs"][n] for n in names] for r in sel], dtype=np.float64)
        y = np.array([r["fraud"] for r in sel], dtype=np.float64)
        scen = np.array([r["scenario"] for r in sel])
        rng = np.random.default_rng(42)
        test = rng.random(len(x)) < 0.25
        xp = prepare(x, names)
        mean = xp[~test].mean(0).astype(np.float32)
        std = np.maximum(xp[~test].std(0), 1e-3).astype(np.float32)
        params = train_mlp(((xp - mean) / std)[~test], y[~test])
        s_model = forward32(x[test], names, mean, std, params)
        c = {n: i for i, n in enumerate(names)}
        s_rule = spec["rule"](x[test], c).astype(np.float64) + 1e-9 * s_model  # tiny tie-break only
        yt = y[test]
        metrics = {}
        for label, s in (("model", s_model), ("rule", s_rule)):
            r1, _ = recall_at_fpr(yt, s, 0.01)
            metrics[label] = {"auc_roc": auc_roc(yt, s), "auc_pr": auc_pr(yt, s), "recall_at_1pct_fpr": r1}
        thresholds = {
            "challenge": threshold_at_fpr(yt, s_model, 0.03),
            "review": threshold_at_fpr(yt, s_model, 0.01),
            "block": threshold_at_fpr(yt, s_model, 0.002),
        }
        # Floors keep the bands meaningful when held-out negatives all score near zero.
        thresholds["challenge"] = max(thresholds["challenge"], 0.3)
        thresholds["review"] = max(thresholds["review"], 0.6, thresholds["challenge"] + 1e-3)
        thresholds["block"] = max(thresholds["block"], 0.85, thresholds["review"] + 1e-3)
        outd = f"{out_dir}/{slot}"
        import os
        os.makedirs(outd, exist_ok=True)
        export_onnx(f"{outd}/model.onnx", names, mean, std, params, slot)
        inputs_spec = []
        raw_mean, raw_std = x[~test].mean(0), np.maximum(x[~test].std(0), 1e-3)
        for i, n in enumerate(names):
            inputs_spec.append({"name": n, "mean": round(float(raw_mean[i]), 6), "std": round(float(raw_std[i]), 6)})
        manifest = {
            "name": slot, "version": version, "onnx": "model.onnx", "golden": "golden.json",
            "inputs": inputs_spec,
            "output": {"name": spec["output"][0], "meaning": spec["output"][1]},
            "thresholds": {k: round(v, 6) for k, v in thresholds.items()},
        }
        json.dump(manifest, open(f"{outd}/manifest.json", "w"), indent=2)
        # Golden vectors: real held-out rows of each scenario, plus edge rows.
        gi = []
        for sc in sorted(set(scen[test])):
            gi.extend(list(np.where(test & (scen == sc))[0][:6]))
        gx = np.vstack([x[gi], np.zeros((1, len(names))), np.full((1, len(names)), 1e6)]).astype(np.float32)
        gy = forward32(gx, names, mean, std, params)
        json.dump({"inputs": gx.tolist(), "outputs": [float(v) for v in gy]}, open(f"{outd}/golden.json", "w"))
        by_scen = {sc: float((s_model[scen[test] == sc] >= thresholds["challenge"]).mean()) for sc in sorted(set(scen[test]))}
        m, r = metrics["model"], metrics["rule"]
        card = f"""# Model card: `{slot}` {version}

{spec['output'][1]}

- **Trained**: {today}, by `models/training/train_baseline.py` (numpy MLP, 1 hidden layer of 32 ReLU units, sigmoid output; normalisation and log-compression inside the ONNX graph).
- **Data**: `riskstream simulate` output, {len(sel)} {spec['event_type'].replace('_', ' ')} events (sha256 prefix `{data_sha}`), {int(y.sum())} positives ({', '.join(sorted(set(scen[y == 1])))}); random 75/25 train / held-out split.
- **Inputs** ({len(names)}, in order): {', '.join('`' + n + '`' for n in names)}. Names refer to the feature catalogue (README); the pipeline computes them with the same code that produced the training data.
- **Output**: `{spec['output'][0]}` in [0, 1].

## Held-out metrics ({int(test.sum())} events, {int(yt.sum())} positives)

| scorer | AUC-ROC | AUC-PR | recall at 1 % FPR |
|---|---|---|---|
| this model | {m['auc_roc']:.4f} | {m['auc_pr']:.4f} | {m['recall_at_1pct_fpr']:.4f} |
| rule baseline: {spec['rule_text']} | {r['auc_roc']:.4f} | {r['auc_pr']:.4f} | {r['recall_at_1pct_fpr']:.4f} |

Share of held-out events at or above the challenge threshold, by scenario: {', '.join(f'{k} {v:.1%}' for k, v in by_scen.items())}.

## Suggested thresholds (held-out false-positive rate)

challenge {thresholds['challenge']:.4f} (3 %), review {thresholds['review']:.4f} (1 %), block {thresholds['block']:.4f} (0.2 %); each at least 0.3 / 0.6 / 0.85.

## Limits

Trained on simulated traffic only: it has learned the simulator's scenarios, not real fraud. Retrain on logged verdict features (the `features` field of each verdict) joined with labels before trusting it with real decisions.
"""
        open(f"{outd}/CARD.md", "w").write(card)
        print(f"{slot}: model AUC-ROC {m['auc_roc']:.4f} AUC-PR {m['auc_pr']:.4f} R@1%FPR {m['recall_at_1pct_fpr']:.4f} | "
              f"rule AUC-ROC {r['auc_roc']:.4f} AUC-PR {r['auc_pr']:.4f} R@1%FPR {r['recall_at_1pct_fpr']:.4f} | thresholds {thresholds}")


if __name__ == "__main__":
    main()
