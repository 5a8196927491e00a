"""Offline screen of the volume-matching target on captured probabilities (tuning half only).

Replays the history pass (`core.segmentation.temporal`) on the probabilities a run kept before it (captured with
bench/capture/sitecustomize.py), with the volume matching's target computed in other ways, and scores the labels
against the truth; mode ``naive`` is today's target and is checked to reproduce the run's own labels bit for bit.
Used for the ablation bullet "Where the early steps' bassanite goes" (2026-12-07): ``dew`` (the probabilities
corrected for the square-root class weights), ``mle`` (prior shift by EM, Saerens et al.).

Run: CAPTURE_DIR=bench/.capture RUNS_DIR=bench/.runs/capture .venv/bin/python bench/screen_volume_target.py naive,dew,mle
"""
import json, os, sys
from pathlib import Path
import numpy as np, tifffile
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.segmentation.temporal import (allowed_transitions, free_classes, most_probable_histories, pair_histogram, matched_offsets)
from core.phases import DEFAULT_PHASES, Reaction
from core.analysis.stoichiometry import molar_evolution

CODES = [1, 2, 3, 4]; NAMES = {1: "gypsum", 2: "bassanite", 3: "pore", 4: "celestite"}
ROOT = Path(__file__).resolve().parents[1]
FAM = ROOT / 'bench' / '.family'
CAP = Path(os.environ.get('CAPTURE_DIR', ROOT / 'bench' / '.capture'))
RUNS = Path(os.environ.get('RUNS_DIR', ROOT / 'bench' / '.runs' / 'capture'))
levels = np.arange(256) / 255.0
_FLOOR = 1e-4

def offsets_for_targets(h, targets):
    logs = np.log(np.clip(levels, _FLOOR, 1.0))
    ratio = (logs[None, :] - logs[:, None]).ravel()
    order = np.argsort(-ratio, kind="stable"); rs = ratio[order]
    out = np.zeros(len(targets), np.float32)
    for t, target in enumerate(targets):
        counts = h[t].astype(np.float64).ravel()
        if counts.sum() == 0: continue
        cum = np.cumsum(counts[order])
        k = int(np.searchsorted(cum, target))
        if k > 0 and abs(cum[k - 1] - target) <= abs(cum[min(k, cum.size - 1)] - target): k -= 1
        k = min(k, cum.size - 1)
        nxt = rs[k + 1] if k + 1 < rs.size else rs[k] - 1.0
        out[t] = -(rs[k] + nxt) / 2.0
    return out

def pair_stats(h):
    pg, pb = np.meshgrid(levels, levels, indexing="ij")
    s = pg + pb
    pt = np.where(s > 0, pb / np.where(s > 0, s, 1), 0.5)  # normalised p_b within the pair
    return pt

def mle_alpha(h, pi_s, pt):
    c = h.astype(np.float64); n = c.sum()
    if n == 0: return 0.0
    a = pt / pi_s; b = (1 - pt) / (1 - pi_s)
    def d(al):
        return float((c * (a - b) / np.maximum(al * a + (1 - al) * b, 1e-12)).sum())
    if d(0.0) <= 0: return 0.0
    if d(1.0) >= 0: return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if d(mid) > 0: lo = mid
        else: hi = mid
    return (lo + hi) / 2

def run_variant(v, modes):
    ds = json.loads((FAM / v / 'dataset.json').read_text())
    steps = ds['steps']; T = len(steps); L = ds['label_step']
    stores = [np.load(CAP / v / f'probs_{i}.npy') for i in range(T)]
    pre = [tifffile.imread(CAP / v / f'pre_{i}.tif') for i in range(T)]
    truth = [tifffile.imread(FAM / v / s['truth']) for s in steps]
    ri, pi = 0, 1
    hists = np.zeros((T, 256, 256), np.int64)
    for i, st in enumerate(stores):
        hists[i] = pair_histogram(st, ri, pi)
    allowed = allowed_transitions(CODES, 1, [2, 3]); free = free_classes(CODES, 1, [2, 3])
    lut = np.asarray(CODES, np.uint8)
    pt = pair_stats(hists[0])
    res = {}
    for mode in modes:
        N = hists.reshape(T, -1).sum(1).astype(float)
        if mode == 'none':
            off = np.zeros(T, np.float32)
        elif mode == 'naive':
            off, info = matched_offsets(hists)
        elif mode == 'dew':
            gt = tifffile.imread(RUNS / v / 'ground_truth.tif')
            lab = gt[gt > 0]
            cnt = np.bincount(lab, minlength=5)[1:].astype(float)
            w = cnt.sum() / (4 * cnt); w = np.sqrt(w); w = np.clip(w / w.mean(), 0.1, 10)
            wg, wb = w[0], w[1]
            pg_, pb_ = np.meshgrid(levels, levels, indexing='ij')
            qb = (pb_ / wb); qg = (pg_ / wg); den = qb + qg
            pbn = np.where(den > 0, qb / np.where(den > 0, den, 1), 0.5)
            targets = [float((hists[t] * pbn).sum()) for t in range(T)]
            off = offsets_for_targets(hists, targets)
            print('   weights g %.2f b %.2f ratio %.2f' % (wg, wb, wb / wg))
        elif mode == 'mle':
            pi_s = float((hists[L] * pt).sum() / hists[L].sum())
            al = [mle_alpha(hists[t], pi_s, pt) for t in range(T)]
            off = offsets_for_targets(hists, [N[t] * al[t] for t in range(T)])
        bias = np.zeros((T, 4), np.float32); bias[:, pi] = off
        probs = np.stack([st[:, :-1] for st in stores]).transpose(0, 2, 1, 3, 4).astype(np.float32) / 255.0
        given = np.stack([st[:, -1] for st in stores])
        out_all = []
        for z0 in range(0, probs.shape[2], 8):
            hist = lut[most_probable_histories(probs[:, :, z0:z0+8], allowed, free, given=given[:, z0:z0+8], log_bias=bias)]
            out_all.append(hist)
        hist = np.concatenate(out_all, axis=1)
        finals = []
        for i in range(T):
            finals.append(np.where(pre[i] == lut[given[i]], hist[i], pre[i]))
        del probs, hist
        per_step, per_phase = [], {c: [] for c in CODES}
        counts = []
        for i in range(T):
            f, t = finals[i], truth[i]
            dice = {}
            for c in CODES:
                nt = int((t == c).sum())
                if nt == 0: continue
                nf = int((f == c).sum()); inter = int(((f == c) & (t == c)).sum())
                dice[c] = 2 * inter / (nf + nt); per_phase[c].append(dice[c])
            per_step.append((float(np.mean(list(dice.values()))), int((f == 2).sum()), int((t == 2).sum())))
            counts.append({p.code: int((f == p.code).sum()) for p in DEFAULT_PHASES})
        pm = {NAMES[c]: float(np.mean(x)) for c, x in per_phase.items() if x}
        tc = [{p.code: s['counts'][p.name] for p in DEFAULT_PHASES} for s in steps]
        vs = ds['voxel_size_um']
        mp = molar_evolution(counts, phases=DEFAULT_PHASES, reaction=Reaction(), voxel_size_um=vs)
        mt = molar_evolution(tc, phases=DEFAULT_PHASES, reaction=Reaction(), voxel_size_um=vs)
        ext = 100 * max(abs(float(a['x']) - float(b['x'])) for a, b in zip(mp, mt))
        res[mode] = dict(worst=min(s[0] for s in per_step), wphase=min(pm.values()), ext=ext,
                         b=[f"{s[1]/1e3:.0f}/{s[2]/1e3:.0f}" for s in per_step], off=[round(float(o), 2) for o in off])
        if mode == 'naive':  # reproduction check against the run's own labels
            same = all(np.array_equal(finals[i], tifffile.imread(RUNS / v / 'segmentations' / f"{steps[i]['name']}.tif")) for i in range(T))
            res[mode]['reproduces_run'] = same
    return res

if __name__ == '__main__':
    modes = sys.argv[1].split(',')
    for v in sorted(p.name for p in CAP.iterdir()):
        if not (CAP / v / 'probs_0.npy').exists(): continue
        try:
            r = run_variant(v, modes)
        except FileNotFoundError as e:
            print(v, 'incomplete', e); continue
        for m, x in r.items():
            print(v[:3], f"{m:6s} worst {x['worst']:.4f} wphase {x['wphase']:.4f} ext {x['ext']:.2f}", ' '.join(x['b'][:4]), x['off'][:4], x.get('reproduces_run', ''))
        sys.stdout.flush()
