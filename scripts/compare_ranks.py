"""Compare two rank CSVs of the same job (e.g. Ianvs's and cepr run's all_rank.csv): columns, cases, and every
cell that is not a timing. Usage: python scripts/compare_ranks.py IANVS.csv CEPR.csv

Ianvs orders its metric columns as a Python set does, so columns are compared as a set; cases are matched by
algorithm and every module hyperparameter column (two cases that share a key are an error). Latency, throughput, TTFT, timestamps and urls vary run to run and are
skipped; every other differing cell is printed (inter-token and tokens/s figures and within_* shares are timings
too, and are printed so that a reader sees them).
"""

import csv
import sys


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    return header, rows


MODULE_COLUMNS = ("hard_example_mining-", "edgemodel-", "cloudmodel-", "dataset_processor-")


def key(row):
    return (row["algorithm"],) + tuple(f"{k}={v}" for k, v in sorted(row.items()) if k.startswith(MODULE_COLUMNS)
                                       and v != "")


def by_key(rows, path):
    out = {}
    for r in rows:
        if key(r) in out:
            sys.exit(f"{path}: two cases share {key(r)}")
        out[key(r)] = r
    return out


def volatile(col):
    return col.startswith("latency") or col in ("throughput", "ttft_mean", "time", "url", "rank")


def main(a, b):
    ha, ra = load(a)
    hb, rb = load(b)
    print("same columns:", set(ha) == set(hb), "; same order:", ha == hb)
    A, B = by_key(ra, a), by_key(rb, b)
    print("cases:", len(A), len(B), "; same cases:", set(A) == set(B))
    compared = diff = 0
    for k in sorted(set(A) & set(B)):
        for c in ha:
            if volatile(c) or c not in hb:
                continue
            compared += 1
            if A[k][c] != B[k][c]:
                diff += 1
                print("differs:", k, c, A[k][c], B[k][c])
    print(f"cells compared: {compared}, equal: {compared - diff}, different: {diff}")
    return 0 if set(ha) == set(hb) and set(A) == set(B) else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
