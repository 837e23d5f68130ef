#!/usr/bin/env python3
"""Leave-one-out 'generous oracle' hit-rate ceiling for the ETA benchmark (issue 4): what
share of readings no estimator could beat on the shared trace. A diagnostic behind a claim
in estimator/README.md, not part of the benchmark or the tests; plain Python 3.

Readings at t = T*k/20, k=0..19. Reading groups: k=0 ('start'), t inside step 1
incl. the tiny pre-step-1 gap ('step1'), later ('later').

Oracle at a reading of task i (recipe R, complexity c), tolerance r:
  candidate set S = all OTHER tasks (whole trace, future included) with recipe R
  and complexity c.  For each j in S a hypothetical total V_j is formed:
    k=0       : V_j = T_j
    otherwise : let s = the step running at t (in a gap: the next step, elapsed 0),
                e = elapsed of s at t; keep j only if dur_j(s) > e;
                V_j = t + (T_j - start_j(s) - e)        (t = known wall elapsed)
  P = argmax_P #{j : |P - V_j| <= r V_j}  (ties: median of the maximising P's)
  hit if |P - T_i| <= r T_i.
  Fallback if fewer than MIN_S candidates survive: pool the recipe's whole tier;
  if still < MIN_S: take the MIN_S tasks of the pooled set with the longest
  step s, with remaining clipped at >= 0 (flagged as 'fallback2').
Optional drift removal: each other task's durations are multiplied by
  d(p_i)/d(p_j), d(p) = exp(0.15 p + 0.10 sin(4 pi p)), p = file index/(N-1).
Also reported: 'in-sample' version (task i itself kept in S) as a looser bound.
EXTRA (speed=True): for readings after step 1, each other task is rescaled by
  sum(own completed durations)/sum(its same completed durations) instead of drift.
"""
import csv, math, bisect, collections, sys

MIN_S = 5
TOL = {'simple': 0.20, 'medium': 0.30, 'complex': 0.50}


def tier(c):
    return 'simple' if c <= 2 else ('medium' if c <= 5 else 'complex')


def load(path):
    tasks = collections.OrderedDict()
    for r in csv.DictReader(open(path)):
        tasks.setdefault(r['task_id'], []).append(r)
    out = []
    n = len(tasks)
    for idx, (tid, rows) in enumerate(tasks.items()):
        rows.sort(key=lambda r: int(r['step_order']))
        st = [float(r['start_s']) for r in rows]
        en = [float(r['end_s']) for r in rows]
        p = idx / (n - 1)
        out.append(dict(id=tid, idx=idx, recipe=tid.split('-', 1)[1],
                        c=int(rows[0]['complexity']), start=st, end=en,
                        T=en[-1], drift=math.exp(0.15 * p + 0.10 * math.sin(4 * math.pi * p))))
    return out


def best_P(vals, r):
    """P maximising #{v: |P-v| <= r v}. Hit iff v in [P/(1+r), P/(1-r)].
    Left-edge candidates P = v_j (1+r); count = #v in [v_j, v_j (1+r)/(1-r)]."""
    v = sorted(vals)
    m = len(v)
    best, cands = -1, []
    for j in range(m):
        hi = v[j] * (1 + r) / (1 - r)
        cnt = bisect.bisect_right(v, hi * (1 + 1e-12)) - j
        if cnt > best:
            best, cands = cnt, [v[j] * (1 + r)]
        elif cnt == best:
            cands.append(v[j] * (1 + r))
    # each maximising window can slide until its right edge hits a point; take the
    # median of the left-edge candidates as a neutral tie-break
    return cands[len(cands) // 2], best / m


def state(task, t):
    """(group, step index s, elapsed e) at wall time t."""
    st, en = task['start'], task['end']
    for s in range(len(st)):
        if t < en[s]:
            e = max(0.0, t - st[s])  # in the gap before step s: elapsed 0
            return ('step1' if s == 0 else 'later'), s, e
    raise ValueError


def run(tasks, drift=False, loo=True, speed=False):
    groups = collections.defaultdict(list)
    for tk in tasks:
        groups[(tk['recipe'], tk['c'])].append(tk)
    tiers_ = collections.defaultdict(list)
    for tk in tasks:
        tiers_[(tk['recipe'], tier(tk['c']))].append(tk)
    res = collections.defaultdict(lambda: [0, 0])   # (tier, group) -> [hits, n]
    fb = collections.Counter()
    ssize = collections.defaultdict(list)
    for tk in tasks:
        tr = tier(tk['c']); r = TOL[tr]; T = tk['T']
        for k in range(20):
            t = T * k / 20
            if k == 0:
                grp, s, e = 'start', 0, 0.0
            else:
                grp, s, e = state(tk, t)

            def build(pool):
                V = []
                for o in pool:
                    if loo and o is tk:
                        continue
                    f = tk['drift'] / o['drift'] if drift else 1.0
                    if speed and k > 0 and s > 0:   # scale by completed-steps ratio
                        f = sum(tk['end'][q] - tk['start'][q] for q in range(s)) / \
                            sum(o['end'][q] - o['start'][q] for q in range(s))
                    if k == 0:
                        V.append(o['T'] * f)
                    else:
                        dur = (o['end'][s] - o['start'][s]) * f
                        if dur > e:
                            V.append(t + (o['T'] - o['start'][s]) * f - e)
                return V
            V = build(groups[(tk['recipe'], tk['c'])])
            if len(V) < MIN_S:
                fb[(tr, grp, 'tier-pool')] += 1
                V = build(tiers_[(tk['recipe'], tr)])
            if len(V) < MIN_S:
                fb[(tr, grp, 'fallback2')] += 1
                pool = [o for o in tiers_[(tk['recipe'], tr)] if not (loo and o is tk)]
                pool.sort(key=lambda o: o['end'][s] - o['start'][s], reverse=True)
                V = []
                for o in pool[:MIN_S]:
                    f = tk['drift'] / o['drift'] if drift else 1.0
                    rem = max(0.0, (o['T'] - o['start'][s]) * f - e)
                    V.append(t + rem)
            ssize[(tr, grp)].append(len(V))
            P, _ = best_P(V, r)
            hit = abs(P - T) <= r * T
            res[(tr, grp)][0] += hit; res[(tr, grp)][1] += 1
    return res, fb, ssize


def table(res, title):
    print(f'\n{title}')
    print(f"{'tier':8s} {'tol':>4s} | {'start':>15s} {'step1':>15s} {'later':>15s} | {'ALL':>6s}")
    for tr in ('simple', 'medium', 'complex'):
        tot = sum(res[(tr, g)][1] for g in ('start', 'step1', 'later'))
        hits = sum(res[(tr, g)][0] for g in ('start', 'step1', 'later'))
        cells = []
        for g in ('start', 'step1', 'later'):
            h, n = res[(tr, g)]
            cells.append(f'{n / tot:5.1%} / {h / n if n else 0:5.1%}')
        print(f'{tr:8s} {TOL[tr]:4.2f} | ' + ' '.join(f'{c:>15s}' for c in cells) + f' | {hits / tot:6.1%}')
    print('cells: share of tier readings / oracle hit rate in that group')


if __name__ == '__main__':
    # Usage: python3 estimator/diagnostics/shared_trace_ceiling.py [../shared/traces/runs.csv]
    tasks = load(sys.argv[1] if len(sys.argv) > 1 else '../shared/traces/runs.csv')
    for drift in (False, True):
        for loo in (True, False):
            res, fb, ss = run(tasks, drift=drift, loo=loo)
            table(res, f"oracle  drift_removed={drift}  leave_one_out={loo}")
            if drift is False and loo is True:
                print('fallbacks:', dict(fb))
                print('  (fallbacks counted per reading; tier-pool = recipe+tier instead of recipe+complexity)')
                for key in sorted(ss):
                    v = sorted(ss[key])
                    print('  |S|', key, 'min', v[0], 'median', v[len(v) // 2])
    res, fb, ss = run(tasks, drift=False, loo=True, speed=True)
    table(res, 'EXTRA oracle, leave_one_out, later readings: other tasks rescaled by ratio of completed-step durations')
